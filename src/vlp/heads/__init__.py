"""Task heads on top of encoders and fusion: ITM classifier, token prediction (MLM/LM)."""

from vlp.heads.itm import ITMHead
from vlp.heads.token_prediction import TokenPredictionHead

__all__ = ["ITMHead", "TokenPredictionHead"]
