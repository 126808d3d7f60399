"""The training-data checks a detector's `fit` and `predict` run, kept in the data layer.

`TrainingDataChecks` is mixed into `detection.modeling.GeneralizedRCNN`, so a user who calls
`model.fit(dataset)` directly gets them as the training engine does: a label outside
`num_classes`, or an image with NaN/inf, is refused with one ValueError line naming the batch
and element. A `tf.data` set is checked batch by batch inside its own pipeline
(`pipeline.checked_training_batches`); a failed check can only surface as a TensorFlow error
from inside Keras' loop, so `fit` is where it is turned back into the promised ValueError.
Arrays are checked up front.
"""

from __future__ import annotations

import tensorflow as tf

from detection.data import pipeline


class TrainingDataChecks:
    """Mixin for a `keras.Model` detector with a `num_classes`: checked `fit` and `predict`."""

    def fit(self, x=None, y=None, *args, **kwargs):
        """`keras.Model.fit` with the training data checked (see the module docstring)."""
        if isinstance(x, tf.distribute.DistributedDataset):
            data = x  # checked inside each worker's pipeline (detection.data.resume.per_worker)
        elif not isinstance(x, tf.data.Dataset):
            pipeline.check_training_batch(x, self.num_classes)
            return super().fit(x, y, *args, **kwargs)
        else:
            data = pipeline.checked_training_batches(x, self.num_classes)
        try:
            return super().fit(data, y, *args, **kwargs)
        except tf.errors.OpError as err:  # a failed in-pipeline check, or another TF error
            error = pipeline.data_error(err)
            if error is None:
                raise
            raise error from None

    def predict(self, x, *args, **kwargs):
        """`keras.Model.predict`; numpy images with NaN/inf are refused up front."""
        pipeline.check_images(x)
        return super().predict(x, *args, **kwargs)
