"""Word2Sen: a sequence-to-sequence language model writes sentences around
the class name (a T5-class model from a local path or the Hugging Face cache).

Sentences are sampled with a generator seeded by (seed, class), so a class's
pool is the same on every worker. A sentence that leaves the class name out
would prompt for something else: the name is put in front of it, and the
number of sentences that needed it is reported.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from synscale.prompts.classes import ClassInfo

DEFAULT_MODEL = "google/flan-t5-large"
DEFAULT_TEMPLATE = "Write a sentence describing a photo of a {name}."


@dataclass(frozen=True)
class Word2Sen:
    model: str = DEFAULT_MODEL      # local folder or Hugging Face id
    template: str = DEFAULT_TEMPLATE  # the model's input; {name} is the CLIP class name
    per_class: int = 20              # sentences in each class's pool
    max_new_tokens: int = 40

    def pools(self, classes: list[ClassInfo], seed: int) -> tuple[dict[int, list[str]], int]:
        """(class index -> sentences, how many needed the name put in front)."""
        import torch
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        from synscale.generators.weights import resolve

        path = resolve(self.model)
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSeq2SeqLM.from_pretrained(path).eval()
        pools, fixed = {}, 0
        for c in classes:
            inputs = tokenizer(self.template.format(name=c.clip_name), return_tensors="pt")
            digest = hashlib.sha256(f"word2sen:{seed}:{c.index}".encode()).digest()
            torch.manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
            with torch.no_grad():
                out = model.generate(**inputs, do_sample=True, top_p=0.95,
                                     num_return_sequences=self.per_class,
                                     max_new_tokens=self.max_new_tokens)
            sentences = []
            for text in tokenizer.batch_decode(out, skip_special_tokens=True):
                text = " ".join(text.split())
                if c.clip_name.lower() not in text.lower():
                    text, fixed = (f"{c.clip_name}, {text}" if text else c.clip_name), fixed + 1
                sentences.append(text)
            pools[c.index] = sentences
        return pools, fixed
