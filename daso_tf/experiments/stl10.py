"""STL-10-LT settings of the DASO paper (FixMatch + DASO, WRN-28-2 at 32x32, 250k steps).

Data (``daso_tf.data.make_long_tailed_data``): labeled = the 5000-image train split minus
50 per class for validation (450 per class left), imbalanced with N1 in {150, 450} and
gamma_l in {10, 20}, class k keeping floor(N1 * gamma_l^(-k/9)) images (N1=450, gamma_l=10:
450, 348, 269, 208, 161, 125, 96, 75, 58, 45); unlabeled = the whole 100k 'unlabelled'
split (labels unknown: num_unlabeled_head = imbalance_unlabeled = -1, "the whole extra
split"); test = the 8000-image test split. Images are augmented at 96 px, then resized to
32 with PIL's bilinear resize (evaluation: resized only). T_dist 0.3 (gamma_l != gamma_u).
Paper numbers: DASO paper Table 2 (median-20 top-1, mean over 3 seeds).

Runtime (every experiment in this file): 250,000 steps; estimated 7-9 h on one
A100/H100-class GPU (the 96 px augmentation costs more input pipeline than CIFAR; an
estimate, not a measured full run).
"""

from daso_tf.config import AlgorithmConfig, DataConfig, ExperimentConfig
from daso_tf.data.long_tailed_data import WHOLE_UNLABELED_SPLIT
from daso_tf.experiments.registry import register

STL10_VALID_PER_CLASS = 50
DIST_TEMPERATURE = 0.3


def stl10_lt(num_labeled_head, imbalance_labeled):
    return ExperimentConfig(
        data=DataConfig(
            dataset="stl10",
            num_valid_per_class=STL10_VALID_PER_CLASS,
            num_labeled_head=num_labeled_head,
            num_unlabeled_head=WHOLE_UNLABELED_SPLIT,
            imbalance_labeled=float(imbalance_labeled),
            imbalance_unlabeled=float(WHOLE_UNLABELED_SPLIT),
            image_size=32,
        ),
        algorithm=AlgorithmConfig(name="daso", dist_temperature=DIST_TEMPERATURE),
    )


# python run.py --experiment=stl10_lt_n150_g10  (~7-9 h on one GPU; paper 70.0)
@register("stl10_lt_n150_g10", paper_top1=70.0, paper_source="Table 2",
          description="N1=150 gamma_l=10, unlabeled: the 100k extra split, T_dist=0.3")
def stl10_lt_n150_g10():
    return stl10_lt(150, 10)


# python run.py --experiment=stl10_lt_n450_g10  (~7-9 h on one GPU; paper 78.4)
@register("stl10_lt_n450_g10", paper_top1=78.4, paper_source="Table 2",
          description="N1=450 gamma_l=10, unlabeled: the 100k extra split, T_dist=0.3")
def stl10_lt_n450_g10():
    return stl10_lt(450, 10)


# python run.py --experiment=stl10_lt_n150_g20  (~7-9 h on one GPU; paper 65.7)
@register("stl10_lt_n150_g20", paper_top1=65.7, paper_source="Table 2",
          description="N1=150 gamma_l=20, unlabeled: the 100k extra split, T_dist=0.3")
def stl10_lt_n150_g20():
    return stl10_lt(150, 20)


# python run.py --experiment=stl10_lt_n450_g20  (~7-9 h on one GPU; paper 75.3)
@register("stl10_lt_n450_g20", paper_top1=75.3, paper_source="Table 2",
          description="N1=450 gamma_l=20, unlabeled: the 100k extra split, T_dist=0.3")
def stl10_lt_n450_g20():
    return stl10_lt(450, 20)
