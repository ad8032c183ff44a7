"""Leader epochs in journal records (README "Running a cluster").

Each leader that takes over through etcd gets a higher epoch (service/leadership.py), and every
record it journals carries it (`JournalCommand.leader_epoch`, field 102). Two things follow:
- a follower refuses a record whose epoch is older than the newest it has applied: a deposed
  leader that wakes up (SIGSTOP then SIGCONT) cannot slip records into a follower that has
  already moved on to its successor;
- two journals hold the same history up to sequence N only if their records at N carry the same
  epoch (as Raft's log matching): how a rejoining server finds out that it holds records the
  new leader never had.

Stamping costs one bytes concatenation per record: protobuf merges concatenated messages, so the
encoded `leader_epoch` field is appended to the command's encoding as it is.
"""

from __future__ import annotations

from google.protobuf.message import DecodeError

from atpd.v1 import journal_pb2

# The largest epoch accepted (etcd revisions and our counter stay far below it).
MAX_EPOCH = (1 << 63) - 1


class StaleEpoch(Exception):
    """A record from an older leader than one already applied: refused, nothing applied."""

    def __init__(self, sequence: int, epoch: int, newest_epoch: int) -> None:
        self.sequence = sequence
        self.epoch = epoch
        self.newest_epoch = newest_epoch
        super().__init__(
            f"record {sequence} comes from leader epoch {epoch}, older than epoch "
            f"{newest_epoch} already applied here: refused (a deposed leader's record)"
        )


def epoch_suffix(epoch: int) -> bytes:
    """The encoded `leader_epoch` field, appended to each command's encoding (empty for 0, the
    single-server journal, so its records stay byte for byte what they were)."""
    if not 0 <= epoch <= MAX_EPOCH:
        raise ValueError(f"leader epoch {epoch} is not in 0..{MAX_EPOCH}")
    return journal_pb2.JournalCommand(leader_epoch=epoch).SerializeToString()


def record_epoch(payload: bytes) -> int:
    """The leader epoch a journal payload was written under (0 when it carries none); raises
    ValueError when the payload is not a journal command."""
    entry = journal_pb2.JournalCommand()
    try:
        entry.ParseFromString(payload)
    except DecodeError as error:
        raise ValueError(f"not a journal command: {error}") from error
    epoch: int = entry.leader_epoch
    return epoch


class EpochGate:
    """On a follower's apply path: remembers the newest epoch applied and refuses older ones.

    Epochs only grow along one history, so a record older than the newest applied can only come
    from a leader that was deposed after it wrote it."""

    __slots__ = ("newest_epoch",)

    def __init__(self, newest_epoch: int = 0) -> None:
        self.newest_epoch = newest_epoch

    def check(self, sequence: int, payload: bytes) -> int:
        """The record's epoch once it is acceptable; raises StaleEpoch (and remembers nothing)
        when it is older than the newest applied. Call `accepted` once it is applied."""
        epoch = record_epoch(payload)
        if epoch < self.newest_epoch:
            raise StaleEpoch(sequence, epoch, self.newest_epoch)
        return epoch

    def accepted(self, epoch: int) -> None:
        if epoch > self.newest_epoch:
            self.newest_epoch = epoch
