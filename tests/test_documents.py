"""training/documents.py: whole documents one per row, segment by segment: the pieces, every position
predicted exactly once in order, resets, padding, token files, shuffling, resuming and a rank's share."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from training.documents import DocumentBatch, DocumentRows, DocumentStreams, document_count, document_pieces
from training.evaluation import document_offsets
from training.tokens import TokenSplit

SEP = 0


def data_of(text: bytes) -> torch.Tensor:
    """Bytes as a uint8 tensor; '|' is written for the separator (0)."""
    return torch.tensor(list(text.replace(b"|", b"\0")), dtype=torch.uint8)


def read_all(streams: DocumentStreams, segments: int = 1) -> list[DocumentBatch]:
    """Every batch until the streams are exhausted."""
    batches = []
    while not streams.exhausted:
        batches.append(streams.next(segments))
        assert len(batches) < 1000
    return batches


def joined(batches: list[DocumentBatch]) -> DocumentBatch:
    """The batches one after the other, as one batch."""
    return DocumentBatch(*(torch.cat([getattr(b, f) for b in batches], dim=1)
                           for f in ("inputs", "labels", "reset", "offsets")))


# Documents of distinct letters: an (input, label, offset) triple names the position it predicts.
@pytest.mark.parametrize("text", [b"ab|cde||f|", b"ab|cde||fgh", b"|abc|de|", b"||a|", b"abcdefghij"])
@pytest.mark.parametrize("rows, segment", [(1, 1), (1, 4), (2, 3), (3, 2), (5, 16)])
def test_sequential_reading_predicts_every_position_once_with_its_offset(text, rows, segment):
    data = data_of(text)
    batch = joined(read_all(DocumentStreams(data, SEP, rows, segment, shuffle=False), segments=2))
    valid = batch.labels != -100
    assert ((batch.offsets == -1) == ~valid).all() and (batch.inputs[~valid] == SEP).all()
    triples = sorted(zip(batch.inputs[valid].tolist(), batch.labels[valid].tolist(), batch.offsets[valid].tolist()))
    reference = document_offsets(data, SEP)
    assert triples == sorted(zip(data[:-1].tolist(), data[1:].tolist(), reference[1:].tolist()))
    if rows == 1:  # one row reads the whole split in order
        assert batch.labels[valid].tolist() == data[1:].tolist()
        assert batch.offsets[valid].tolist() == reference[1:].tolist()
    # one reset per piece, at a segment whose first label is its piece's first: offset 0 (1 for a split that
    # starts inside a document), and no reset anywhere else
    first = batch.offsets.view(rows, -1, segment)[..., 0]
    assert batch.reset.sum() == document_count(data, SEP) and (first[batch.reset] <= 1).all()
    assert not ((first == 0) & ~batch.reset).any()


def test_one_row_reads_the_pieces_in_order_with_resets_and_padding():
    data = data_of(b"ab|cde||fgh")  # pieces: (0,2) "ab|", (2,6) "|cde|", (6,7) "||", (7,10) "|fgh"
    assert document_pieces(data, SEP)[0].tolist() == [0, 2, 6, 7] and document_count(data, SEP) == 4
    streams = DocumentStreams(data, SEP, rows=1, segment=3, shuffle=False, ignore_index=-1)
    assert len(streams) == 4
    batch = streams.next(5)
    # segment by segment; '.' marks padding in the labels
    assert batch.inputs.tolist() == [data_of(b"ab|" b"|cd" b"e||" b"|||" b"|fg").tolist()]
    labels = data_of(b"b|." b"cde" b"|.." b"|.." b"fgh").tolist()
    assert batch.labels.tolist() == [[-1 if t == ord(".") else t for t in labels]]
    assert batch.offsets.tolist() == [[1, 2, -1,  0, 1, 2,  3, -1, -1,  0, -1, -1,  0, 1, 2]]
    assert batch.reset.tolist() == [[True, True, False, True, True]]
    assert streams.exhausted
    padding = streams.next(1)
    assert (padding.labels == -1).all() and not padding.reset.any() and (padding.inputs == SEP).all()


def test_rows_share_the_documents_in_order_and_idle_rows_pad():
    data = data_of(b"abcde|f|gh|")  # pieces of 5, 2 and 3 predictions
    streams = DocumentStreams(data, SEP, rows=2, segment=4, shuffle=False)
    first = streams.next(1)
    assert first.reset.tolist() == [[True], [True]]
    assert first.labels[0].tolist() == list(b"bcde") and first.labels[1].tolist() == [ord("f"), SEP, -100, -100]
    second = streams.next(1)  # row 0 goes on with its document; row 1 takes the next one
    assert second.reset.tolist() == [[False], [True]]
    assert second.labels[0].tolist() == [SEP, -100, -100, -100] and second.offsets[0].tolist() == [5, -1, -1, -1]
    assert second.labels[1].tolist() == [ord("g"), ord("h"), SEP, -100]
    assert streams.exhausted and not streams.next(1).reset.any()


def test_token_split_input(tmp_path):
    ids = np.array([5, 6, 9, 7, 9, 9, 8, 9], dtype="<u2")  # separator 9: documents [5 6] [7] [] [8]
    path = tmp_path / "train.bin"
    ids.tofile(path)
    split = TokenSplit(path, "uint16", len(ids), text_bytes=8, vocab_size=10)
    streams = DocumentStreams(split, 9, rows=2, segment=2, shuffle=False)
    batches = read_all(streams)
    labels = torch.cat([b.labels for b in batches], dim=1)
    assert labels.dtype == torch.int64 and len(streams) == 4
    assert sorted(labels[labels != -100].tolist()) == sorted(ids[1:].tolist())
    with pytest.raises(ValueError, match="separator=10 is outside"):
        DocumentStreams(split, 10, rows=1, segment=1, shuffle=False)


def test_shuffle_follows_the_seed_and_resumes_identically(tmp_path):
    data = data_of(b"|".join(bytes([65 + i]) * (i + 1) for i in range(9)) + b"|")

    def streams(seed: int) -> DocumentStreams:
        return DocumentStreams(data, SEP, rows=3, segment=4, shuffle=True, seed=seed)

    a, b, c = streams(1), streams(1), streams(2)
    runs = [torch.cat([s.next(2).labels for _ in range(6)]) for s in (a, b, c)]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    for _ in range(3):  # a saved state, a few epochs in (each next reads 6 segments of 3 rows)
        buffer = io.BytesIO()
        torch.save(a.state_dict(), buffer)
        later = [a.next(3) for _ in range(4)]
        resumed = streams(1)
        resumed.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
        for expected in later:
            got = resumed.next(3)
            assert all(torch.equal(getattr(got, f), getattr(expected, f)) for f in ("inputs", "labels", "reset", "offsets"))
    assert a.epoch >= 2


def _first_letters(streams: DocumentStreams, documents: int) -> list[int]:
    """One row, segments longer than any document: each segment reads one whole document, named by its letter."""
    return [int(streams.next(1).labels[0, 0]) for _ in range(documents)]


NINE = data_of(b"|" + b"|".join(bytes([65 + i]) * (i + 1) for i in range(9)) + b"|")  # 9 documents A..IIIIIIIII


def test_shuffle_reads_every_document_once_per_epoch_in_a_fresh_order():
    """Training rows take the documents in a random order, each once per epoch (not drawn with
    replacement), a new order each epoch; epoch 0's is torch.randperm under the seed (as bench/quality.py
    drew it before orders were drawn per epoch, so its earlier runs of less than an epoch read the same)."""
    streams = DocumentStreams(NINE, SEP, rows=1, segment=16, shuffle=True, seed=0)
    epochs = [_first_letters(streams, 9) for _ in range(3)]
    for epoch in epochs:
        assert sorted(epoch) == list(range(65, 74))  # all nine, once each
    assert epochs[0] != epochs[1] or epochs[1] != epochs[2]  # a fresh order each epoch
    assert epochs[0] == [65 + i for i in torch.randperm(9, generator=torch.Generator().manual_seed(0)).tolist()]


@pytest.mark.parametrize("streams", [2, 3, 9, 12])
def test_streams_of_one_seed_read_each_document_once_per_epoch_between_them(streams):
    """train.py's streams (micro-batches x processes) share one order per epoch, each its own places of
    it: together each document once per epoch, and who reads which changes from epoch to epoch. With
    fewer documents than streams, streams share places, each in its own draw: every document still
    read in each epoch, and two streams sharing places do not read the same documents in the same order."""
    readers = [DocumentStreams(NINE, SEP, rows=1, segment=16, shuffle=True, seed=5, stream=s, streams=streams)
               for s in range(streams)]
    places = min(streams, 9)
    sizes = [len(range(s % places, 9, places)) for s in range(streams)]  # each stream's documents per epoch
    parts = []
    for _ in range(3):  # three epochs
        part = [_first_letters(r, size) for r, size in zip(readers, sizes)]
        parts.append(part)
        letters = [letter for p in part for letter in p]
        if streams <= 9:
            assert sorted(letters) == list(range(65, 74))
        else:
            assert set(letters) == set(range(65, 74))
    assert parts[0] != parts[1] or parts[1] != parts[2]
    sequences = [[p[s] for p in parts] for s in range(streams)]  # each stream's documents, epoch by epoch
    assert all(sequences[s] != sequences[s + places] for s in range(streams - places))  # sharers: not copies


def test_a_state_continues_only_where_it_was_taken():
    """A state names the documents, seed and stream it was taken from; elsewhere, or from the version
    that drew orders from a generator's state, it is refused, saying what differs."""
    streams = DocumentStreams(NINE, SEP, rows=1, segment=16, shuffle=True, seed=0)
    _first_letters(streams, 4)
    state = streams.state_dict()
    share = DocumentStreams(NINE, SEP, rows=1, segment=16, shuffle=True, seed=0, documents=[0, 2])
    with pytest.raises(ValueError, match=r"documents selected \(argument documents\) 9, these have 2"):
        share.load_state_dict(state)  # another set of documents: its order cannot continue
    other = DocumentStreams(NINE, SEP, rows=1, segment=16, shuffle=True, seed=0, documents=[1, 3])
    with pytest.raises(ValueError, match="checksum of the documents selected"):  # as many, but others
        other.load_state_dict(share.state_dict())
    with pytest.raises(ValueError, match="seed 0, these have 1"):
        DocumentStreams(NINE, SEP, rows=1, segment=16, shuffle=True, seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match=r"streams \(micro-batches times processes in train.py\) 1, these have 2"):
        DocumentStreams(NINE, SEP, rows=1, segment=16, shuffle=True, seed=0, streams=2).load_state_dict(state)
    old = {k: v for k, v in state.items() if k not in ("epoch", "seed", "stream", "streams", "pool_crc")}
    old.update(generator=torch.Generator().get_state(), epoch_generator=None)
    with pytest.raises(ValueError, match="drew its orders from a generator's state"):
        DocumentStreams(NINE, SEP, rows=1, segment=16, shuffle=True, seed=0).load_state_dict(old)


def test_sequential_state_round_trip_and_mismatch():
    data = data_of(b"abcdefg|hij|klm|nopqrstu|v|")
    whole = read_all(DocumentStreams(data, SEP, rows=2, segment=3, shuffle=False))
    first = DocumentStreams(data, SEP, rows=2, segment=3, shuffle=False)
    head = [first.next(1) for _ in range(3)]
    second = DocumentStreams(data, SEP, rows=2, segment=3, shuffle=False)
    second.load_state_dict(first.state_dict())
    tail = read_all(second)
    assert torch.equal(torch.cat([b.labels for b in head + tail], 1), torch.cat([b.labels for b in whole], 1))
    with pytest.raises(ValueError, match="rows 2, these have 3"):
        DocumentStreams(data, SEP, rows=3, segment=3, shuffle=False).load_state_dict(first.state_dict())
    with pytest.raises(ValueError, match="documents in the split 5, these have 4"):
        DocumentStreams(data[:-2], SEP, rows=2, segment=3, shuffle=False).load_state_dict(first.state_dict())


def test_documents_subset_is_one_ranks_share():
    data = data_of(b"a|bb|ccc|dddd|eeeee|")
    count = document_count(data, SEP)
    shares = []
    for rank in range(2):
        streams = DocumentStreams(data, SEP, rows=2, segment=8, shuffle=False, documents=range(rank, count, 2))
        labels = torch.cat([b.labels for b in read_all(streams)], 1)
        shares.append(sorted(labels[labels != -100].tolist()))
    assert shares == [sorted(data_of(b"|ccc|eeeee|").tolist()), sorted(data_of(b"bb|dddd|").tolist())]
    idle = DocumentStreams(data, SEP, rows=1, segment=8, shuffle=False, documents=[])
    assert idle.exhausted


@pytest.mark.parametrize("micro_batches, processes", [(3, 1), (2, 2), (4, 3)])
def test_train_pys_reader_makes_every_micro_batch_of_every_process_a_stream(micro_batches, processes):
    """DocumentRows: micro-batch i of process p is stream p * micro_batches + i of them all, one seed."""
    readers = [DocumentRows(NINE, SEP, 2, 8, 1, micro_batches, -100, 3, process, processes)
               for process in range(processes)]
    streams = [stream for reader in readers for stream in reader.streams]
    assert [(s.stream, s.streams, s.seed) for s in streams] == [(j, len(streams), 3) for j in range(len(streams))]
    with pytest.raises(ValueError, match="process=2 must be in 0..processes - 1"):
        DocumentRows(NINE, SEP, 1, 4, 1, 1, -100, 0, 2, 2)
    with pytest.raises(ValueError, match="micro_batches=0 must be >= 1"):
        DocumentRows(NINE, SEP, 1, 4, 1, 0, -100, 0)


def test_train_pys_reader_loads_no_stream_unless_every_one_fits():
    rows = DocumentRows(NINE, SEP, 1, 16, 1, 2, -100, 0)
    for _ in range(3):
        rows.next(0), rows.next(1)
    state = rows.state_dict()
    state["streams"][1]["seed"] = 99  # the second stream's state does not fit
    fresh = DocumentRows(NINE, SEP, 1, 16, 1, 2, -100, 0)
    with pytest.raises(ValueError, match="seed 99, these have 0"):
        fresh.load_state_dict(state, torch.device("cpu"))
    assert [s.epoch for s in fresh.streams] == [-1, -1] and fresh.streams[0].piece == [-1]  # untouched


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(rows=0), ValueError, "rows=0"),
    (dict(segment=-1), ValueError, "segment=-1"),
    (dict(separator=256), ValueError, "separator=256 is outside"),
    (dict(separator=1.0), TypeError, "separator must be an int"),
    (dict(shuffle=True), ValueError, "shuffle=True needs seed, an int >= 0"),
    (dict(shuffle=True, seed=0, stream=2, streams=2), ValueError, r"stream=2 must be in 0\.\.streams - 1"),
    (dict(data=torch.zeros(2, 3, dtype=torch.uint8)), TypeError, "1-d CPU integer tensor.*2-d"),
    (dict(data=torch.zeros(6)), TypeError, "1-d CPU integer tensor.*float32"),
    (dict(data=data_of(b"|")), ValueError, "1 tokens hold no prediction"),
    (dict(data=data_of(b"")), ValueError, "0 tokens hold no prediction"),
    (dict(documents=[5]), ValueError, r"documents must be indices in 0\.\.1"),
    (dict(data=torch.tensor([1, 2, 3, 4]), separator=-1), ValueError, r"separator=-1 is outside token ids \(>= 0\)"),
])
def test_bad_arguments_name_the_argument(kwargs, error, message):
    args = dict(data=data_of(b"ab|cd|"), separator=SEP, rows=1, segment=2, shuffle=False) | kwargs
    with pytest.raises(error, match=message):
        DocumentStreams(args.pop("data"), args.pop("separator"), args.pop("rows"), args.pop("segment"), **args)
