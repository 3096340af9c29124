"""SentencePiece-style (llama) tokenizer with scores and byte fallback: llama2.c's run.c encode/decode,
its tokenizer.bin format, GGUF ``tokenizer.ggml.*`` fields, and a small BPE trainer for the toy models.

Two piece conventions exist for a space: SentencePiece (and GGUF) write it as "▁" (U+2581); llama2.c's
exported tokenizer.bin replaced "▁" by a literal " ", and run.c looks " " up literally. A Tokenizer
detects its convention from its pieces (``space_piece``) and converts text and GGUF fields accordingly.
"""

from __future__ import annotations

import heapq
import re
import struct
import zlib
from collections import Counter
from pathlib import Path

from ..atomic import atomic_write_bytes
from ..errors import ModelError

SP_SPACE = "\u2581"  # SentencePiece's visible space "▁"
# GGUF token types, as llama.cpp defines them
TYPE_NORMAL, TYPE_UNKNOWN, TYPE_CONTROL, TYPE_BYTE = 1, 2, 3, 6
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>\Z")
_MAX_PIECE_BYTES = 1 << 16  # no real vocabulary has a piece this long; a larger length is a corrupt file


class Tokenizer:
    """A vocabulary of pieces with merge scores; encodes like llama2.c's run.c (score-greedy BPE).

    pieces[i] is token i's text; scores[i] its merge priority (higher merges first);
    token_types[i] a GGUF token type (derived from the pieces when None).
    """

    def __init__(
        self,
        pieces: list[str | bytes],
        scores: list[float],
        token_types: list[int] | None = None,
        bos_id: int = 1,
        eos_id: int = 2,
        unk_id: int = 0,
    ):
        if len(pieces) != len(scores):
            raise ModelError(f"expected one score per piece, found {len(pieces)} pieces and {len(scores)} scores")
        if token_types is not None and len(token_types) != len(pieces):
            raise ModelError(f"expected one token type per piece, found {len(token_types)} for {len(pieces)} pieces")
        n = len(pieces)
        for name, value in (("bos_id", bos_id), ("eos_id", eos_id), ("unk_id", unk_id)):
            if not 0 <= value < n:
                raise ModelError(f"expected 0 <= id < {n}, found {value}", key=name)
        texts = []
        for i, piece in enumerate(pieces):
            if isinstance(piece, bytes):
                try:
                    piece = piece.decode("utf-8")
                except UnicodeDecodeError:
                    raise ModelError(f"expected UTF-8 piece text, found {piece[:16]!r}", key=f"token {i}") from None
            texts.append(piece)
        self._pieces: list[str] = texts
        self._scores: list[float] = [float(s) for s in scores]
        self.bos_id, self.eos_id, self.unk_id = int(bos_id), int(eos_id), int(unk_id)
        # byte value of each <0xNN> token, -1 for others
        self._byte_of = [-1] * n
        self._byte_ids = [self.unk_id] * 256
        for i, piece in enumerate(texts):
            m = _BYTE_PIECE.match(piece)
            if m and (token_types is None or token_types[i] == TYPE_BYTE):
                b = int(m.group(1), 16)
                self._byte_of[i] = b
                if self._byte_ids[b] == self.unk_id:
                    self._byte_ids[b] = i
        if token_types is None:
            token_types = [TYPE_BYTE if b >= 0 else TYPE_NORMAL for b in self._byte_of]
            token_types[self.unk_id] = TYPE_UNKNOWN
            token_types[self.bos_id] = token_types[self.eos_id] = TYPE_CONTROL
        self._types: list[int] = [int(t) for t in token_types]
        # text -> id for what text can become: control, unknown and byte tokens never come from text
        # (SentencePiece's rule; on llama2.c's 32k vocabulary it gives run.c's ids, tests/data checks it)
        self._lookup: dict[str, int] = {}
        for i, piece in enumerate(texts):
            if self._types[i] not in (TYPE_UNKNOWN, TYPE_CONTROL, TYPE_BYTE):
                self._lookup.setdefault(piece, i)  # first id wins on duplicates
        with_marker = sum(SP_SPACE in p for p in texts)
        with_space = sum(" " in p for p in texts)
        self.space_piece = SP_SPACE if with_marker > with_space else " "

    # ---- basic queries -------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return len(self._pieces)

    def id_to_piece(self, token_id: int) -> str:
        return self._pieces[token_id]

    def score(self, token_id: int) -> float:
        return self._scores[token_id]

    def token_type(self, token_id: int) -> int:
        return self._types[token_id]

    def piece_to_id(self, piece: str) -> int | None:
        return self._lookup.get(piece)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Tokenizer):
            return NotImplemented
        return (self._pieces, self._scores, self._types, self.bos_id, self.eos_id, self.unk_id) == (
            other._pieces, other._scores, other._types, other.bos_id, other.eos_id, other.unk_id)

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, space_piece={self.space_piece!r})"

    # ---- encode / decode -------------------------------------------------------------------------

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
        """run.c's encode: BOS, dummy-prefix space, codepoints (else bytes), then score-greedy merges."""
        out = [self.bos_id] if bos else []
        if text:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ModelError(f"expected text encodable as UTF-8, found {exc.reason} at {exc.start}") from None
            if self.space_piece != " ":
                text = text.replace(" ", self.space_piece)
            out.extend(self._merge(self._symbols(self.space_piece + text)))
        if eos:
            out.append(self.eos_id)
        return out

    def _symbols(self, text: str) -> list[int]:
        ids: list[int] = []
        lookup, byte_ids = self._lookup, self._byte_ids
        for ch in text:
            i = lookup.get(ch)
            if i is not None:
                ids.append(i)
            else:
                ids.extend(byte_ids[b] for b in ch.encode("utf-8"))
        return ids

    def _merge(self, ids: list[int]) -> list[int]:
        """Repeatedly merge the adjacent pair whose concatenation has the highest score, leftmost on ties.

        Same result as run.c's O(n^2) rescan; a heap of candidate pairs with lazy invalidation makes it
        O(n log n). Node i keeps its position, so the heap's (−score, left position) order is run.c's.
        """
        n = len(ids)
        if n < 2:
            return ids
        pieces, scores, lookup = self._pieces, self._scores, self._lookup
        sym = [pieces[i] for i in ids]
        nxt = list(range(1, n + 1))
        prv = list(range(-1, n - 1))
        heap: list[tuple[float, int, int, str, str, int]] = []

        def push(left: int, right: int) -> None:
            merged = lookup.get(sym[left] + sym[right])
            if merged is not None:
                heap.append((-scores[merged], left, right, sym[left], sym[right], merged))

        for i in range(n - 1):
            push(i, i + 1)
        heapq.heapify(heap)
        ids = list(ids)
        alive = [True] * n
        while heap:
            _, left, right, lsym, rsym, merged = heapq.heappop(heap)
            if not (alive[left] and alive[right] and nxt[left] == right and sym[left] == lsym and sym[right] == rsym):
                continue
            ids[left] = merged
            sym[left] = pieces[merged]
            alive[right] = False
            after = nxt[right]
            nxt[left] = after
            if after < n:
                prv[after] = left
            for a, b in ((prv[left], left), (left, after)):
                if a >= 0 and b < n:
                    m = lookup.get(sym[a] + sym[b])
                    if m is not None:
                        heapq.heappush(heap, (-scores[m], a, b, sym[a], sym[b], m))
        return [ids[i] for i in range(n) if alive[i]]

    def _check_id(self, token_id: int) -> int:
        if not isinstance(token_id, int) or isinstance(token_id, bool) or not 0 <= token_id < self.vocab_size:
            raise ModelError(f"expected a token id in 0..{self.vocab_size - 1}, found {token_id!r}")
        return token_id

    def decode_piece_bytes(self, prev_id: int, token_id: int) -> bytes:
        """run.c's decode(): the piece's bytes, leading space stripped after BOS, <0xNN> as the raw byte."""
        self._check_id(token_id)
        b = self._byte_of[token_id]
        if b >= 0:
            # a vocabulary without a " " piece (llama2.c's 32k file cut to 512) carries the dummy prefix as
            # <0x20>; run.c crashes there (str_lookup gives -1), SentencePiece strips it: so do we
            return b"" if b == 0x20 and prev_id == self.bos_id else bytes((b,))
        piece = self._pieces[token_id]
        if self.space_piece != " ":
            piece = piece.replace(self.space_piece, " ")
        if prev_id == self.bos_id and piece.startswith(" "):
            piece = piece[1:]
        return piece.encode("utf-8")

    def decode_piece(self, prev_id: int, token_id: int) -> str:
        """One token's text; a lone byte token that is not valid UTF-8 by itself shows as U+FFFD."""
        return self.decode_piece_bytes(prev_id, token_id).decode("utf-8", errors="replace")

    def decode(self, ids: list[int]) -> str:
        """Text of ``ids``: control tokens (BOS/EOS) print nothing, byte tokens join into UTF-8 across tokens."""
        out = bytearray()
        prev = -1
        for token_id in ids:
            self._check_id(token_id)
            if self._types[token_id] != TYPE_CONTROL:
                out += self.decode_piece_bytes(prev, token_id)
            prev = token_id
        return out.decode("utf-8", errors="replace")

    # ---- llama2.c tokenizer.bin ------------------------------------------------------------------

    @classmethod
    def from_llama2c(cls, path: str | Path, vocab_size: int | None = None) -> "Tokenizer":
        """Read llama2.c's tokenizer.bin: int32 max_token_length, then per token float32 score, int32 len, bytes.

        ``vocab_size`` reads only the first N entries (as run.c does for a model with a smaller vocabulary).
        """
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ModelError(f"cannot read tokenizer ({exc.strerror})", source=path) from None
        if len(data) < 4:
            raise ModelError(f"expected a 4-byte max_token_length header, found {len(data)} bytes", source=path)
        (max_len,) = struct.unpack_from("<i", data, 0)
        if not 0 <= max_len <= _MAX_PIECE_BYTES:
            raise ModelError(f"expected max_token_length in 0..{_MAX_PIECE_BYTES}, found {max_len}", source=path)
        if vocab_size is not None and vocab_size <= 0:
            raise ModelError(f"expected vocab_size > 0, found {vocab_size}", source=path)
        pieces: list[bytes] = []
        scores: list[float] = []
        offset = 4
        while offset < len(data) and (vocab_size is None or len(pieces) < vocab_size):
            i = len(pieces)
            if offset + 8 > len(data):
                raise ModelError(f"token {i}: expected score and length (8 bytes), found {len(data) - offset}",
                                 source=path)
            score, length = struct.unpack_from("<fi", data, offset)
            offset += 8
            if not 0 <= length <= max(max_len, 0) or offset + length > len(data):
                raise ModelError(f"token {i}: expected a length in 0..{min(max_len, len(data) - offset)}, "
                                 f"found {length}", source=path)
            pieces.append(data[offset:offset + length])
            scores.append(score)
            offset += length
        if vocab_size is not None and len(pieces) < vocab_size:
            raise ModelError(f"expected {vocab_size} tokens, found {len(pieces)} (file truncated?)", source=path)
        if len(pieces) < 3:
            raise ModelError(f"expected at least <unk>, <s>, </s>, found {len(pieces)} tokens", source=path)
        try:
            return cls(pieces, scores, None, bos_id=1, eos_id=2, unk_id=0)
        except ModelError as exc:
            raise ModelError(str(exc), source=path) from None

    def to_llama2c(self, path: str | Path) -> None:
        """Write llama2.c's tokenizer.bin atomically, with spaces as " " (run.c's convention)."""
        body = bytearray()
        max_len = 0
        for piece, score in zip(self._llama2c_pieces(), self._scores):
            raw = piece.encode("utf-8")
            max_len = max(max_len, len(raw))
            body += struct.pack("<fi", score, len(raw)) + raw
        atomic_write_bytes(path, struct.pack("<i", max_len) + bytes(body))

    def _llama2c_pieces(self) -> list[str]:
        if self.space_piece == " ":
            return list(self._pieces)
        return [p.replace(SP_SPACE, " ") if t == TYPE_NORMAL else p for p, t in zip(self._pieces, self._types)]

    # ---- GGUF tokenizer.ggml.* -------------------------------------------------------------------

    @classmethod
    def from_gguf_fields(cls, tokens, scores, token_types, bos_id, eos_id, unk_id=0) -> "Tokenizer":
        """Build from GGUF ``tokenizer.ggml.{tokens,scores,token_type,bos_token_id,...}`` (model "llama")."""
        tokens = [t if isinstance(t, bytes) else str(t) for t in tokens]
        if scores is None or len(scores) == 0:
            scores = [0.0] * len(tokens)
        types = None if token_types is None or len(token_types) == 0 else [int(t) for t in token_types]
        return cls(tokens, [float(s) for s in scores], types, int(bos_id), int(eos_id), int(unk_id))

    def to_gguf_fields(self) -> dict:
        """GGUF fields in SentencePiece form ("▁" for spaces; llama2.c's "\\n<s>\\n" as "<s>")."""
        tokens = []
        for piece, t in zip(self._pieces, self._types):
            if t == TYPE_NORMAL and self.space_piece == " ":
                piece = piece.replace(" ", SP_SPACE)
            elif t == TYPE_CONTROL:
                piece = piece.strip("\n")
            tokens.append(piece)
        return {
            "tokens": tokens,
            "scores": list(self._scores),
            "token_types": list(self._types),
            "bos_id": self.bos_id,
            "eos_id": self.eos_id,
            "unk_id": self.unk_id,
        }


# ---- training ---------------------------------------------------------------------------------

def _words(text: str) -> list[str]:
    """SentencePiece's whitespace split: "▁" starts a word; runs of spaces give lone "▁" words."""
    return re.findall(f"{SP_SPACE}[^{SP_SPACE}]*|[^{SP_SPACE}]+", SP_SPACE + text.replace(" ", SP_SPACE))


def train_bpe(texts: list[str], vocab_size: int, seed: int = 0) -> Tokenizer:
    """Train a SentencePiece-style BPE vocabulary of at most ``vocab_size`` pieces on ``texts``.

    Ids: 0 <unk>, 1 <s>, 2 </s>, 3..258 <0x00>..<0xFF>, then single characters by frequency
    (covering 99.95% of the corpus, always "▁"), then merged pieces in merge order. A merge's score
    is minus its rank, so ``encode``'s score-greedy merging replays training order. Ties between equally
    frequent pairs break by a CRC of (seed, pair): deterministic for a fixed corpus and seed.
    Fewer than ``vocab_size`` pieces come back when the corpus has no more pairs to merge.
    """
    n_fixed = 3 + 256
    if vocab_size < n_fixed + 1:
        raise ModelError(f"expected vocab_size >= {n_fixed + 1} (specials, 256 bytes, '▁'), found {vocab_size}",
                         key="vocab_size")
    word_freq: Counter[str] = Counter()
    for text in texts:
        if text:
            word_freq.update(_words(text))
    char_freq: Counter[str] = Counter()
    for word, freq in word_freq.items():
        for ch in word:
            char_freq[ch] += freq
    total = sum(char_freq.values())
    chars = [SP_SPACE]
    covered = char_freq.pop(SP_SPACE, 0)
    for ch, freq in sorted(char_freq.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(chars) >= vocab_size - n_fixed or covered >= 0.9995 * total:
            break
        chars.append(ch)
        covered += freq

    pieces = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + chars
    piece_id = {p: i for i, p in enumerate(pieces)}
    first_char_id = n_fixed

    # words as lists of piece ids; an uncovered character (byte fallback) splits its word, since
    # byte pieces never merge
    words: list[list[int]] = []
    freqs: list[int] = []
    for word, freq in sorted(word_freq.items()):
        segment: list[int] = []
        for ch in word + "\0":
            i = piece_id.get(ch) if ch != "\0" else None
            if i is not None:
                segment.append(i)
            else:
                if len(segment) >= 2:
                    words.append(segment)
                    freqs.append(freq)
                segment = []

    pair_count: dict[tuple[int, int], int] = {}
    where: dict[tuple[int, int], set[int]] = {}
    for wi, w in enumerate(words):
        f = freqs[wi]
        for pair in zip(w, w[1:]):
            pair_count[pair] = pair_count.get(pair, 0) + f
            where.setdefault(pair, set()).add(wi)

    def tiebreak(pair: tuple[int, int]) -> int:
        return zlib.crc32(f"{seed}\0{pieces[pair[0]]}\0{pieces[pair[1]]}".encode("utf-8"))

    heap = [(-c, tiebreak(p), p) for p, c in pair_count.items()]
    heapq.heapify(heap)
    merge_ids: list[int] = []
    while len(pieces) < vocab_size and heap:
        negc, _, pair = heapq.heappop(heap)
        if pair_count.get(pair, 0) != -negc or negc == 0:
            continue  # stale entry: the pair's count changed after it was pushed
        a, b = pair
        merged = pieces[a] + pieces[b]
        new_id = piece_id.get(merged)
        if new_id is None:
            new_id = len(pieces)
            pieces.append(merged)
            piece_id[merged] = new_id
            merge_ids.append(new_id)
        delta: Counter[tuple[int, int]] = Counter()
        for wi in where.pop(pair, ()):
            w, f = words[wi], freqs[wi]
            out: list[int] = []
            i = 0
            while i < len(w):
                if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                    out.append(new_id)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            if len(out) == len(w):
                continue
            for p in zip(w, w[1:]):
                delta[p] -= f
            for p in zip(out, out[1:]):
                delta[p] += f
                where.setdefault(p, set()).add(wi)
            words[wi] = out
        for p, d in delta.items():
            if d:
                c = pair_count.get(p, 0) + d
                pair_count[p] = c
                if c > 0:
                    heapq.heappush(heap, (-c, tiebreak(p), p))
        pair_count.pop(pair, None)

    n_merges = len(merge_ids)
    scores = [0.0] * len(pieces)
    for rank, i in enumerate(merge_ids):
        scores[i] = -float(rank)
    for rank in range(len(chars)):
        scores[first_char_id + rank] = -float(n_merges + rank)
    types = [TYPE_UNKNOWN, TYPE_CONTROL, TYPE_CONTROL] + [TYPE_BYTE] * 256 + [TYPE_NORMAL] * (len(pieces) - n_fixed)
    return Tokenizer(pieces, scores, types, bos_id=1, eos_id=2, unk_id=0)
