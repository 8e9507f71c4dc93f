"""Using pre-trained models on downstream tasks: retrieval with ITM re-ranking, zero-shot
classification, VQA. Import the submodules directly (``vlp.adapt.retrieval``...)."""
