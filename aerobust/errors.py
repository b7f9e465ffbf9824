"""Errors a user can cause. The CLI prints them as one line and exits with code 2."""


class AerobustError(Exception):
    """Base class: something the user can fix; the message says what to do."""


class UnknownNameError(AerobustError, KeyError):
    """A registry was asked for a name it does not hold."""

    def __str__(self):  # KeyError would quote the message
        return self.args[0] if self.args else ""


class ShapeError(AerobustError):
    """A tensor does not have the shape a model or an operation expects."""


class DataUnavailableError(AerobustError):
    """A dataset cannot be read (missing files offline, unreadable folder)."""


class InvalidDataError(AerobustError):
    """A dataset was read but its contents are unusable (NaN pixels, labels that are not class indices)."""


class CheckpointError(AerobustError):
    """A checkpoint is missing, unreadable, or does not match its sidecar."""


class ThreatViolation(AssertionError):
    """An attack returned a point outside its threat model: a bug in the attack, not user error."""


class DistributedError(AerobustError):
    """The torch.distributed world (torchrun's RANK, WORLD_SIZE, ...) is misconfigured or cannot be joined."""
