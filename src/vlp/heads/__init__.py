"""Task heads on top of encoders and fusion: ITM classifier, token prediction (MLM/LM), VQA answer classifier."""

from vlp.heads.itm import ITMHead
from vlp.heads.token_prediction import TokenPredictionHead
from vlp.heads.vqa import VQAHead

__all__ = ["ITMHead", "TokenPredictionHead", "VQAHead"]
