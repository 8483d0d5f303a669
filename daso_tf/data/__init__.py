"""Long-tailed data: sources, splits, per-sample augmentation and tf.data streams.

Names are imported lazily: the sources, splits and their checks need only NumPy, so
run.py can check a data source before importing TensorFlow.
"""

from daso_tf._lazy import lazy_getattr

_PUBLIC = {
    "WHOLE_UNLABELED_SPLIT": "daso_tf.data.long_tailed_data",
    "LongTailedData": "daso_tf.data.long_tailed_data",
    "check_unlabeled_settings": "daso_tf.data.long_tailed_data",
    "make_long_tailed_data": "daso_tf.data.long_tailed_data",
    "class_aware_weights": "daso_tf.data.pipeline",
    "eval_stream": "daso_tf.data.pipeline",
    "make_strong_augment": "daso_tf.data.pipeline",
    "train_stream": "daso_tf.data.pipeline",
    "NORMALIZATION": "daso_tf.data.sources",
    "SourceArrays": "daso_tf.data.sources",
    "DatasetUnavailableError": "daso_tf.data.sources",
    "check_tfds_available": "daso_tf.data.sources",
    "load_image_folder": "daso_tf.data.sources",
    "load_source": "daso_tf.data.sources",
    "class_counts": "daso_tf.data.splits",
    "long_tailed_split": "daso_tf.data.splits",
    "resize_images": "daso_tf.data.image_resize",
    "augment": "daso_tf.data.augment",  # a module
}

__all__ = sorted(_PUBLIC)


__getattr__ = lazy_getattr(__name__, _PUBLIC, globals())


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
