"""DASO inside your own Keras program: your backbone, your arrays, fit, save/load, export.

    python -m examples.user_code [--steps 200] [--out /tmp/daso_example]   (from the repo root)

Uses random 16x16 images unless you swap in your own arrays (uint8 [N, H, W, 3], int labels).
"""

import argparse
import os

import keras
import numpy as np

import daso_tf
from daso_tf.data import load_source, make_long_tailed_data, train_stream, eval_stream


def main(steps=200, out="/tmp/daso_example"):
    rng = np.random.default_rng(0)
    arrays = {"train_images": rng.integers(0, 256, (400, 16, 16, 3), np.uint8),
              "train_labels": np.repeat(np.arange(4), 100),
              "test_images": rng.integers(0, 256, (40, 16, 16, 3), np.uint8),
              "test_labels": np.repeat(np.arange(4), 10), "class_names": ["a", "b", "c", "d"]}
    source = load_source("my_data", source="numpy", arrays=arrays)
    data = make_long_tailed_data(source, num_valid_per_class=5, num_labeled_head=30,
                                 num_unlabeled_head=60, imbalance_labeled=10, imbalance_unlabeled=10,
                                 reverse_unlabeled=False, seed=0)
    print(data.summary())

    backbone = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(16, 3, activation="relu"),
                                 keras.layers.BatchNormalization(), keras.layers.GlobalAveragePooling2D()])
    model = daso_tf.DASO(backbone=backbone, num_classes=4, normalization=((0.5,) * 3, (0.25,) * 3),
                         labeled_class_counts=data.labeled_counts, class_names=data.class_names,
                         warmup_steps=steps // 2, queue_size=16, histogram_period=10)
    model.compile()
    stream = train_stream(data, labeled_batch_size=8, unlabeled_ratio=2, seed=0, output_size=16)
    model.fit(stream, steps_per_epoch=steps // 2, epochs=2, verbose=2)
    print(model.evaluate(eval_stream(data.test_images, data.test_labels, batch_size=20, output_size=16),
                         return_dict=True, verbose=0))

    os.makedirs(out, exist_ok=True)
    model.save(f"{out}/daso.keras")
    restored = keras.models.load_model(f"{out}/daso.keras")
    print("restored step", int(restored.step.numpy()))
    print("exported to", restored.export(f"{out}/serving", model_name="my_daso", overwrite=True, version=1))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--out", default="/tmp/daso_example")
    main(**vars(parser.parse_args()))
