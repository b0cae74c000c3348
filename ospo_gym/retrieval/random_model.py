"""A random sentence-transformers model saved to disk (:func:`build_random_model`), so that tests and
benchmarks of the dense retriever run offline, without downloading weights."""

from __future__ import annotations

import collections
import warnings
from collections.abc import Sequence
from pathlib import Path

from ospo_gym.retrieval.dense import _check_texts, _require

__all__ = ["build_random_model"]


def build_random_model(
    directory: str | Path,
    corpus: Sequence[str],
    *,
    dim: int = 32,
    layers: int = 1,
    heads: int = 2,
    vocab_size: int = 1000,
    max_seq_length: int = 64,
    seed: int = 0,
) -> Path:
    """Save a randomly initialised BERT sentence-transformers model, for tests and benchmarks offline.

    The WordPiece vocabulary is built from ``corpus`` deterministically: the special tokens, every character
    (alone and as a ``##`` continuation), then the most frequent lower-cased words (ties by the word), up to
    ``vocab_size`` entries; BERT normalisation and pre-tokenisation. Weights come from ``torch.manual_seed(seed)``;
    pooling is the token mean. The same arguments give the same files. Embeddings carry no meaning. Uses
    ``transformers`` and ``tokenizers`` (sentence-transformers' own dependencies).

    Returns:
        ``directory / "model"``, loadable by path (``DenseRetriever(docs, path)``).
    """
    torch = _require("torch")
    st = _require("sentence_transformers")
    tokenizers = _require("tokenizers")
    transformers = _require("transformers")
    try:
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.models import Pooling, Transformer

    corpus = _check_texts(corpus, "corpus")
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    normalizer = tokenizers.normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
    # counted here rather than by WordPieceTrainer, whose tie-breaking changes from run to run
    counts = collections.Counter(
        word for text in corpus for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))
    )
    characters = sorted({c for word in counts for c in word})
    vocab = specials + characters + [f"##{c}" for c in characters]
    frequent = sorted((w for w in counts if len(w) > 1), key=lambda w: (-counts[w], w))
    vocab += frequent[: max(vocab_size - len(vocab), 0)]
    tok = tokenizers.Tokenizer(
        tokenizers.models.WordPiece({token: i for i, token in enumerate(vocab)}, unk_token="[UNK]")
    )
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = tokenizers.processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    directory = Path(directory)
    hf_dir = directory / "hf"
    transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=max_seq_length,
    ).save_pretrained(hf_dir)
    config = transformers.BertConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=dim,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=2 * dim,
        max_position_embeddings=max_seq_length,
    )
    with torch.random.fork_rng(devices=[]):  # leaves the caller's global generator as it was
        torch.manual_seed(seed)
        transformers.BertModel(config).save_pretrained(hf_dir)
    out = directory / "model"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation notices of the module paths, across versions
        transformer = Transformer(str(hf_dir), max_seq_length=max_seq_length)
        st.SentenceTransformer(modules=[transformer, Pooling(dim, "mean")], device="cpu").save(str(out))
    return out
