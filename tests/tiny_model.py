"""Build a tiny Qwen2-architecture chat model on disk, in seconds.

The fast test tier runs the real loading, scoring, streaming and UI code on
this model: random weights (seeded, so outputs are deterministic), a small
byte-level BPE tokenizer trained with the ``tokenizers`` library on a few
lines of English and Chinese, and Qwen's ChatML chat template. Its answers are
nonsense, which is the point: tests assert behaviour (shapes, validity,
determinism, limits), not quality.
"""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

_CORPUS = [
    "positive negative neutral sentiment review text answer label",
    "The food was great and the service was friendly. I loved it.",
    "The room was dirty, the staff rude, and I will never come back.",
    "Hello! How can I help you today? Tell me a story about a cat.",
    "这家酒店很好，服务热情。房间很脏，非常失望。质量不错，物流很快。",
    "system user assistant You are a helpful assistant.",
]


_LABEL_WORDS = ["positive", "negative", "Positive", "Negative"]  # each as a line: no space before it


def build_tiny_model(out_dir: Path, seed: int = 0) -> Path:
    """Write a loadable tiny chat model to ``out_dir`` and return it."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    out_dir.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # The label words, often enough to be one token each, as they are in Qwen's own vocabulary: a
    # label's score is its whole token sequence, and random weights would favour the shorter label.
    bpe.train_from_iterator(_CORPUS * 4 + _LABEL_WORDS * 40, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[1:],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(out_dir)

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    )
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = config.eos_token_id
    model.save_pretrained(out_dir)
    return out_dir


if __name__ == "__main__":  # python -m tests.tiny_model OUT_DIR
    import sys

    print(build_tiny_model(Path(sys.argv[1])))
