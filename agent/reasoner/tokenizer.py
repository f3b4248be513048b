"""A small byte-level BPE tokenizer for the tiny VLM, trained on the reasoning captions.

Byte-level, so any string round-trips (numbers or words never seen in training fall back to
bytes instead of <unk>) and decoding restores the exact spacing and punctuation.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from agent.reasoner.qa import template_texts

PAD_TOKEN = "<pad>"
BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"
UNK_TOKEN = "<unk>"
IMAGE_TOKEN = "<image>"  # one per image patch; the VLM's processor expands it
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN, IMAGE_TOKEN)

# Fixed text of the tiny VLM's prompt convention (see tiny_vlm.CHAT_TEMPLATE).
PROMPT_MARKERS = ("Q:", "A:", "\n")


def build_tokenizer(texts: Iterable[str], vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `texts` plus the QA templates; ids 0..4 are SPECIAL_TOKENS.

    The returned tokenizer adds no special tokens itself: the prompt template writes the
    BOS token, and training appends EOS after each target.
    """
    min_size = 256 + len(SPECIAL_TOKENS)  # the byte alphabet must fit
    if vocab_size < min_size:
        raise ValueError(f"`vocab_size` must be >= {min_size}, got {vocab_size}")
    tok = Tokenizer(models.BPE(unk_token=UNK_TOKEN))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )

    def corpus() -> Iterable[str]:
        for text in texts:
            yield str(text)
        # Targets follow "A:" after a space; train the merges on that form too.
        for text in template_texts():
            yield text
            yield " " + text
        yield from PROMPT_MARKERS

    tok.train_from_iterator(corpus(), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=UNK_TOKEN,
        extra_special_tokens={"image_token": IMAGE_TOKEN},
        padding_side="left",
    )
