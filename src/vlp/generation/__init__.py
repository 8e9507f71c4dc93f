"""Text generation for every model with an LM head (BLIP, GIT, CoCa, SimVLM, ...).

    cfg = GenerationConfig.for_tokenizer(tokenizer, strategy="beam", num_beams=3)
    out = generate(model.eval(), pixels, cfg)          # out.sequences [B, T], out.scores [B]
    ll = sequence_log_likelihood(model, pixels, answers, answer_mask, bos_token_id=tokenizer.cls_id)

Decoding uses the model's KV cache (`vlp.layers.cache`) unless ``use_cache=False``, which re-runs
the full sequence every step (the reference the cache is tested against).
"""

from vlp.generation.config import GenerationConfig
from vlp.generation.likelihood import sequence_log_likelihood
from vlp.generation.search import GenerationOutput, generate
from vlp.generation.state import DecodingState

__all__ = ["DecodingState", "GenerationConfig", "GenerationOutput", "generate", "sequence_log_likelihood"]
