"""Long-tailed data: sources, splits, per-sample augmentation and tf.data streams."""

from daso_tf.data import augment
from daso_tf.data.long_tailed_data import LongTailedData, make_long_tailed_data
from daso_tf.data.pipeline import eval_stream, make_strong_augment, train_stream
from daso_tf.data.sources import NORMALIZATION, SourceArrays, load_image_folder, load_source
from daso_tf.data.splits import class_counts, long_tailed_split

__all__ = ["LongTailedData", "NORMALIZATION", "SourceArrays", "augment", "class_counts",
           "eval_stream", "load_image_folder", "load_source", "long_tailed_split",
           "make_long_tailed_data", "make_strong_augment", "train_stream"]
