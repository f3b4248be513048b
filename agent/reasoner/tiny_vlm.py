"""The shipped tiny VLM: a Llava-architecture model configured from scratch (no download).

A 2-layer CLIP vision tower on a squashed `image_size` x `image_size` view of the front
camera, a 2-layer MLP projector and a small Llama decoder, packaged with a `LlavaProcessor`
(PIL CLIP image processor + the caption tokenizer + `CHAT_TEMPLATE`). Saved with
`save_pretrained`, the directory loads like any Hugging Face VLM:
`AutoModelForImageTextToText.from_pretrained(dir)` / `AutoProcessor.from_pretrained(dir)`.

Prompt convention (`CHAT_TEMPLATE`): "<s><image>...<image>\\nQ: {question}\\nA:" and the
answer follows as " {answer}</s>".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)
from transformers.models.clip import CLIPImageProcessorPil

from agent.reasoner.tokenizer import IMAGE_TOKEN

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}" + IMAGE_TOKEN + "\n"
    "{% elif content['type'] == 'text' %}Q: {{ content['text'] }}\n{% endif %}"
    "{% endfor %}{% endfor %}{% if add_generation_prompt %}A:{% endif %}"
)
TARGET_PREFIX = " "  # the answer follows "A:" after one space

# ImageNet/CLIP normalisation, the CLIP image processor's default.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class TinyVLMConfig:
    """Sizes of the tiny VLM. The camera image is resized (squashed) to image_size^2."""

    image_size: int = 96  # [px] square input of the vision tower
    patch_size: int = 16  # [px] -> (image_size / patch_size)^2 image tokens
    vision_hidden: int = 128
    vision_layers: int = 2
    vision_heads: int = 4
    text_hidden: int = 192
    text_layers: int = 3
    text_heads: int = 4
    max_positions: int = 256  # image tokens + prompt + answer

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value <= 0:
                raise ValueError(f"`{name}` must be > 0, got {value}")
        if self.image_size % self.patch_size:
            raise ValueError(
                f"`image_size` must be a multiple of `patch_size` ({self.patch_size}), "
                f"got {self.image_size}"
            )
        for hidden, heads in (("vision_hidden", "vision_heads"), ("text_hidden", "text_heads")):
            if getattr(self, hidden) % getattr(self, heads):
                raise ValueError(f"`{hidden}` must be a multiple of `{heads}`")
        if self.num_image_tokens >= self.max_positions:
            raise ValueError(
                f"`max_positions` must exceed the {self.num_image_tokens} image tokens, "
                f"got {self.max_positions}"
            )

    @property
    def num_image_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2


def build_tiny_vlm(
    tokenizer: PreTrainedTokenizerFast, config: TinyVLMConfig | None = None, seed: int = 0
) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """A randomly initialised tiny Llava model and its processor (deterministic for `seed`)."""
    cfg = config or TinyVLMConfig()
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    if not isinstance(image_token_id, int) or image_token_id == tokenizer.unk_token_id:
        raise ValueError(f"the tokenizer has no {IMAGE_TOKEN!r} token")
    vision = CLIPVisionConfig(
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        hidden_size=cfg.vision_hidden,
        intermediate_size=2 * cfg.vision_hidden,
        num_hidden_layers=cfg.vision_layers,
        num_attention_heads=cfg.vision_heads,
        projection_dim=cfg.vision_hidden,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.text_hidden,
        intermediate_size=2 * cfg.text_hidden,
        num_hidden_layers=cfg.text_layers,
        num_attention_heads=cfg.text_heads,
        num_key_value_heads=cfg.text_heads,
        max_position_embeddings=cfg.max_positions,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    llava = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=image_token_id,
        image_seq_length=cfg.num_image_tokens,
        vision_feature_layer=-1,  # only 2 vision layers: use the last
        vision_feature_select_strategy="default",  # drop CLS: one token per patch
        projector_hidden_act="gelu",
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(llava)
    gen = model.generation_config
    gen.pad_token_id = tokenizer.pad_token_id
    gen.bos_token_id = tokenizer.bos_token_id
    gen.eos_token_id = tokenizer.eos_token_id
    gen.do_sample = False
    image_processor = CLIPImageProcessorPil(
        size={"height": cfg.image_size, "width": cfg.image_size},
        do_center_crop=False,
        crop_size={"height": cfg.image_size, "width": cfg.image_size},
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=cfg.patch_size,
        vision_feature_select_strategy="default",
        chat_template=CHAT_TEMPLATE,
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=1,  # the CLS token, dropped by the "default" strategy
    )
    return model.eval(), processor
