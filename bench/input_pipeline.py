"""Input-pipeline throughput: weak, strong (reference pool), keras_cv and keras RandAugment,
and the full training stream, side by side.

    python -m bench.input_pipeline [--batch 64 --ratio 2 --steps 20 --repeats 5]

Prints JSON: images/s per variant (median over repeats, interleaved so that load from
other processes hits every variant alike) and ratios. Uses the offline CIFAR-10 zip
(../shared/datasets/cifar10_jpeg.zip, the first test images) when present, else random
images.
"""

import argparse
import io
import json
import os
import pathlib
import statistics
import time
import zipfile

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from daso_tf.data import augment, pipeline  # noqa: E402
from daso_tf.data.long_tailed_data import LongTailedData  # noqa: E402

ZIP = pathlib.Path(__file__).resolve().parents[1].parent / "shared/datasets/cifar10_jpeg.zip"


def load_images(count):
    if ZIP.is_file():
        from PIL import Image

        with zipfile.ZipFile(ZIP) as archive:
            names = sorted(n for n in archive.namelist() if n.startswith("test/")
                           and n.endswith(".jpg"))[:count]
            images = [np.asarray(Image.open(io.BytesIO(archive.read(n))).convert("RGB"))
                      for n in names]
        return np.stack(images), f"cifar10_jpeg.zip ({len(images)} test images)"
    return (np.random.default_rng(0).integers(0, 256, (count, 32, 32, 3), np.uint8),
            "random images")


def batch_stream(images, batch, fn):
    """Batches of stored images mapped through fn(images, seed) in parallel, as the
    training stream does."""
    images = tf.constant(images)
    count = images.shape[0] // batch

    def make(step):
        index = (step % count) * batch
        seed = tf.stack([step, tf.constant(7, tf.int64)])
        return fn(images[index:index + batch], seed)

    return tf.data.Dataset.range(1 << 40).map(
        make, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(
            tf.data.AUTOTUNE)


def throughput(dataset, steps, images_per_step):
    # Timed from the iterator's creation (functions are traced when the dataset is built and
    # by the first repeat), so that nothing is computed ahead of the clock.
    start = time.perf_counter()
    iterator = iter(dataset)
    for _ in range(steps):
        tf.nest.map_structure(lambda t: t.shape, next(iterator))
    return steps * images_per_step / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--ratio", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    unlabeled_batch = args.batch * args.ratio
    images, origin = load_images(max(2000, 4 * unlabeled_batch))
    labels = np.zeros([len(images)], np.int64)
    lt_data = LongTailedData(images, labels, images, labels - 1, images[:0], labels[:0],
                             images[:0], labels[:0], ["all"], [len(images)], None, [0])
    variants = {
        "weak": (batch_stream(images, unlabeled_batch, augment.weak_augment), unlabeled_batch),
        "strong_reference": (batch_stream(images, unlabeled_batch, augment.strong_augment),
                             unlabeled_batch),
        "strong_keras_cv": (batch_stream(images, unlabeled_batch,
                                         pipeline.make_strong_augment("keras_cv")),
                            unlabeled_batch),
        "strong_keras": (batch_stream(images, unlabeled_batch,
                                      pipeline.make_strong_augment("keras")), unlabeled_batch),
        # images per step: B labeled + mu*B unlabeled images, each with two views.
        "train_stream": (pipeline.train_stream(lt_data, labeled_batch_size=args.batch,
                                               unlabeled_ratio=args.ratio, seed=0),
                         args.batch + 2 * unlabeled_batch),
    }
    samples = {name: [] for name in variants}
    for dataset, _ in variants.values():  # warm-up: tracing, Keras layers built
        next(iter(dataset))
    for _ in range(args.repeats):
        for name, (dataset, per_step) in variants.items():
            steps = args.steps if name != "strong_keras" else max(2, args.steps // 5)
            samples[name].append(throughput(dataset, steps, per_step))
    result = {
        "images_per_second": {name: round(statistics.median(v), 1)
                              for name, v in samples.items()},
        "batch": args.batch, "ratio": args.ratio, "steps": args.steps,
        "repeats": args.repeats, "images": origin, "cpu_count": os.cpu_count(),
    }
    ips = result["images_per_second"]
    result["ratio_strong_reference_over_keras_cv"] = round(
        ips["strong_reference"] / ips["strong_keras_cv"], 3)
    result["ratio_strong_reference_over_keras"] = round(
        ips["strong_reference"] / ips["strong_keras"], 3)
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
