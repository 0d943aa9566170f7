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


def test_shuffle_draws_from_the_generator_and_resumes_identically(tmp_path):
    data = data_of(b"|".join(bytes([65 + i]) * (i + 1) for i in range(9)) + b"|")

    def streams(seed: int) -> DocumentStreams:
        generator = torch.Generator().manual_seed(seed)
        return DocumentStreams(data, SEP, rows=3, segment=4, shuffle=True, generator=generator)

    a, b, c = streams(1), streams(1), streams(2)
    runs = [torch.cat([s.next(2).labels for _ in range(6)]) for s in (a, b, c)]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    later = [a.next(3) for _ in range(4)]
    resumed = streams(7)
    resumed.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    for expected in later:
        got = resumed.next(3)
        assert all(torch.equal(getattr(got, f), getattr(expected, f)) for f in ("inputs", "labels", "reset", "offsets"))


def test_shuffle_reads_every_document_once_per_epoch_and_old_states_start_a_new_one():
    """Training rows take the documents in a random order, each once per epoch (not drawn with
    replacement), a new order each epoch; a state saved when documents were drawn with replacement
    (no "order") loads and starts a fresh epoch."""
    data = data_of(b"|" + b"|".join(bytes([65 + i]) * (i + 1) for i in range(9)) + b"|")  # 9 documents A..IIIIIIIII

    def first_letters(streams: DocumentStreams, documents: int) -> list[int]:
        # one row, segments longer than any document: each segment reads one whole document
        return [int(streams.next(1).labels[0, 0]) for _ in range(documents)]

    streams = DocumentStreams(data, SEP, rows=1, segment=16, shuffle=True, generator=torch.Generator().manual_seed(0))
    epochs = [first_letters(streams, 9) for _ in range(3)]
    for epoch in epochs:
        assert sorted(epoch) == list(range(65, 74))  # all nine, once each
    assert epochs[0] != epochs[1] or epochs[1] != epochs[2]  # a fresh order each epoch

    old = streams.state_dict()
    del old["epoch_generator"], old["pool"]
    resumed = DocumentStreams(data, SEP, rows=1, segment=16, shuffle=True, generator=torch.Generator())
    resumed.load_state_dict(old)
    assert sorted(first_letters(resumed, 9)) == list(range(65, 74))
    share = DocumentStreams(data, SEP, rows=1, segment=16, shuffle=True, generator=torch.Generator(), documents=[0, 2])
    with pytest.raises(ValueError, match=r"documents selected \(documents=\) 9, these have 2"):
        share.load_state_dict(streams.state_dict())  # another set of documents: its order cannot continue
    other = DocumentStreams(data, SEP, rows=1, segment=16, shuffle=True, generator=torch.Generator(), documents=[1, 3])
    with pytest.raises(ValueError, match="checksum of the documents selected"):  # as many, but others
        other.load_state_dict(share.state_dict())


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


@pytest.mark.parametrize("micro_batches, shares", [(3, 1), (2, 2), (4, 3)])
def test_the_streams_of_every_micro_batch_and_process_read_disjoint_shares(micro_batches, shares):
    """train.py's reader: each micro-batch of each process draws from its own share of the documents,
    the shares together every document once, so that the run reads each once per epoch (streams each
    drawing from all would together read some twice and others not at all); fewer documents than
    streams: each reads them all."""
    data = data_of(b"|" + b"|".join(bytes([65 + i]) * 3 for i in range(13)) + b"|")  # 13 documents
    pools = [stream.pool for share in range(shares)
             for stream in DocumentRows(data, SEP, 2, 8, 1, micro_batches, -100, torch.Generator(), share, shares).streams]
    assert sorted(j for pool in pools for j in pool) == list(range(13))
    few = DocumentRows(data_of(b"a|b|"), SEP, 1, 4, 1, 3, -100, torch.Generator())
    assert [stream.pool for stream in few.streams] == [[0, 1]] * 3
    with pytest.raises(ValueError, match="share=2 must be in 0..shares - 1"):
        DocumentRows(data, SEP, 1, 4, 1, 1, -100, torch.Generator(), 2, 2)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(rows=0), ValueError, "rows=0"),
    (dict(segment=-1), ValueError, "segment=-1"),
    (dict(separator=256), ValueError, "separator=256 is outside"),
    (dict(separator=1.0), TypeError, "separator must be an int"),
    (dict(shuffle=True), ValueError, "shuffle=True needs a CPU torch.Generator"),
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
