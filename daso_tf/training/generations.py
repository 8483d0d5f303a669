"""Drives the generations of a self-training learner (CReST+: ``daso_tf.algorithms.crest``).

A generation ends at a boundary step (``total_steps // num_generations`` apart); starting
the next one needs a pass over the whole unlabeled set with the EMA network and changes
the labeled set the training stream draws from, so it happens between ``fit`` calls:

    loop = GenerationLoop(model, lt_data)
    for first, last in loop.segments(start_step, total_steps):   # cut at the boundaries
        loop.advance(first)                  # starts the generation due at ``first``, if any
        stream = train_stream(loop.training_data(), ..., start_step=first)
        model.fit(stream, steps_per_epoch=last - first, epochs=1)

``run.py`` does exactly this (``daso_tf.training.loop``), evaluating and checkpointing
within the segments, and saves a checkpoint right after a generation starts, so a resumed
run finds the new generation (its selection is model state) and draws the same batches.
"""

import dataclasses

from daso_tf.training.dataset_inference import predict_probabilities


class GenerationLoop:
    """The between-steps part of CReST's generations for ``model`` on ``lt_data``.

    Args:
        model: a built learner with ``CReSTGenerations`` (FixMatchCReST, ReMixMatchCReST).
        lt_data: the run's ``LongTailedData`` (its labeled set is the original one).
        batch_size, output_size: of the inference pass over the unlabeled set.
        log: where to report a new generation.
    """

    def __init__(self, model, lt_data, *, batch_size=256, output_size=32, log=print):
        self.model, self.lt_data = model, lt_data
        self.batch_size, self.output_size, self.log = int(batch_size), int(output_size), log

    @staticmethod
    def drives(model):
        """Whether ``model`` trains in generations."""
        from daso_tf.algorithms.crest import CReSTGenerations

        return isinstance(model, CReSTGenerations)

    def boundaries(self, total_steps):
        """The steps at which a new generation starts (not the run's end)."""
        period, count = self.model.generation_period, self.model.num_generations
        return [g * period for g in range(1, count) if g * period < total_steps]

    def segments(self, start_step, total_steps):
        """[(first, last)] covering [start_step, total_steps), cut at the boundaries."""
        cuts = [start_step] + [b for b in self.boundaries(total_steps) if b > start_step] + [total_steps]
        return [(first, last) for first, last in zip(cuts[:-1], cuts[1:]) if first < last]

    def advance(self, step):
        """Starts the generation due at ``step`` if it has not started; True if one did."""
        current, due = int(self.model.generation.numpy()), self.model.generation_due(step)
        if due == current:
            return False
        if due != current + 1:
            raise ValueError(f"step {step} belongs to generation {due + 1}, but generation {current + 1} is running: "
                             "start every generation at its boundary step (GenerationLoop.segments).")
        boundary = due * self.model.generation_period
        probs = predict_probabilities(self.model, self.lt_data.unlabeled_images, batch_size=self.batch_size,
                                      output_size=self.output_size)
        selected = self.model.start_generation(probs, boundary)
        counts = self.model.current_labeled_counts.numpy().astype(int).tolist()
        self.log(f"generation {due + 1}/{self.model.num_generations} from step {boundary}: "
                 f"{int((selected >= 0).sum())} pseudo-labeled samples added; labeled set per class {counts}; "
                 "fresh weights")
        return True

    def training_data(self):
        """``lt_data`` with the current generation's labeled set (original + selection)."""
        images, labels = self.model.labeled_training_set(
            self.lt_data.labeled_images, self.lt_data.labeled_labels, self.lt_data.unlabeled_images)
        if images is self.lt_data.labeled_images:
            return self.lt_data
        return dataclasses.replace(self.lt_data, labeled_images=images, labeled_labels=labels)
