"""The paper's per-class split counts of every registered experiment, written out.

CIFAR-10 and STL-10 lists are floor(N1 * gamma_l^(-k/9)) / floor(M1 * gamma_u^(-k/9))
computed by hand (exact decimal arithmetic); the CIFAR-10 gamma=100 and STL-10 N1=450
gamma_l=10 ones are the paper's own checked counts. CIFAR-100's 100 classes come from the
reference's formula re-implemented here, pinned by the paper's totals (1911, 5835, 15651,
11720; gamma=20: 1545, 4741, 12719, 9527 by hand). Test sets: the full splits. Validation:
500 (CIFAR-10) / 50 (CIFAR-100, STL-10) per class. STL-10's unlabeled set is the whole
'unlabelled' split, labels unknown (None).

ACR's own protocol (the ``*_acr`` experiments): no validation set, and each class's unlabeled
images are its first N_k + M_k images, the N_k labeled ones included; for N1=500 / M1=4000 /
gamma=100 ACR's counts (the last class int(N1 / gamma)) equal the floors below.
"""

C10_N1500_G100 = [1500, 899, 539, 323, 193, 116, 69, 41, 25, 15]
C10_M3000_G100 = [3000, 1798, 1078, 646, 387, 232, 139, 83, 50, 30]
C10_N500_G100 = [500, 299, 179, 107, 64, 38, 23, 13, 8, 5]
C10_M4000_G100 = [4000, 2397, 1437, 861, 516, 309, 185, 111, 66, 40]
C10_ACR_U_CONSISTENT = [4500, 2696, 1616, 968, 580, 347, 208, 124, 74, 45]  # N_k + M_k, by hand
C10_ACR_U_UNIFORM = [4500, 4299, 4179, 4107, 4064, 4038, 4023, 4013, 4008, 4005]
C10_ACR_U_REVERSED = [540, 365, 290, 292, 373, 554, 884, 1450, 2405, 4005]

# experiment: (labeled per class, unlabeled per class or None, valid per class,
#              test per class, labeled total, unlabeled total or None)
PAPER_SPLITS = {
    "cifar10_lt_n500": (C10_N500_G100, C10_M4000_G100, 500, 1000, 1236, 9922),
    "cifar10_lt_n1500": (C10_N1500_G100, C10_M3000_G100, 500, 1000, 3720, 7443),
    "cifar10_lt_n500_g150": ([500, 286, 164, 94, 53, 30, 17, 10, 5, 3],
                             [4000, 2292, 1313, 752, 431, 247, 141, 81, 46, 26], 500, 1000, 1162, 9329),
    "cifar10_lt_n1500_g150": ([1500, 859, 492, 282, 161, 92, 53, 30, 17, 10],
                              [3000, 1719, 985, 564, 323, 185, 106, 60, 34, 20], 500, 1000, 3496, 6996),
    "cifar10_lt_n500_uniform": (C10_N500_G100, [4000] * 10, 500, 1000, 1236, 40000),
    "cifar10_lt_n1500_uniform": (C10_N1500_G100, [3000] * 10, 500, 1000, 3720, 30000),
    "cifar10_lt_n500_reversed": (C10_N500_G100, C10_M4000_G100[::-1], 500, 1000, 1236, 9922),
    "cifar10_lt_n1500_reversed": (C10_N1500_G100, C10_M3000_G100[::-1], 500, 1000, 3720, 7443),
    "cifar10_lt_n500_acr": (C10_N500_G100, C10_ACR_U_CONSISTENT, 0, 1000, 1236, 11158),
    "cifar10_lt_n500_uniform_acr": (C10_N500_G100, C10_ACR_U_UNIFORM, 0, 1000, 1236, 41236),
    "cifar10_lt_n500_reversed_acr": (C10_N500_G100, C10_ACR_U_REVERSED, 0, 1000, 1236, 11158),
    "cifar100_lt_n50": ((50, 10), (400, 10), 50, 100, 1911, 15651),
    "cifar100_lt_n150": ((150, 10), (300, 10), 50, 100, 5835, 11720),
    "cifar100_lt_n50_g20": ((50, 20), (400, 20), 50, 100, 1545, 12719),
    "cifar100_lt_n150_g20": ((150, 20), (300, 20), 50, 100, 4741, 9527),
    "stl10_lt_n150_g10": ([150, 116, 89, 69, 53, 41, 32, 25, 19, 15], None, 50, 800, 609, None),
    "stl10_lt_n450_g10": ([450, 348, 269, 208, 161, 125, 96, 75, 58, 45], None, 50, 800, 1835, None),
    "stl10_lt_n150_g20": ([150, 107, 77, 55, 39, 28, 20, 14, 10, 7], None, 50, 800, 507, None),
    "stl10_lt_n450_g20": ([450, 322, 231, 165, 118, 85, 61, 43, 31, 22], None, 50, 800, 1528, None),
}


def _cifar100(head_and_gamma):
    head, gamma = head_and_gamma
    return [int(head * ((1.0 / gamma) ** (k / 99.0))) for k in range(100)]


def paper_split(name):
    """(labeled, unlabeled or None, valid, test) per-class lists and (labeled, unlabeled) totals."""
    labeled, unlabeled, valid, test, labeled_total, unlabeled_total = PAPER_SPLITS[name]
    if name.startswith("cifar100"):
        labeled, unlabeled = _cifar100(labeled), _cifar100(unlabeled)
    num_classes = len(labeled)
    assert sum(labeled) == labeled_total and (unlabeled is None or sum(unlabeled) == unlabeled_total)
    return labeled, unlabeled, [valid] * num_classes, [test] * num_classes
