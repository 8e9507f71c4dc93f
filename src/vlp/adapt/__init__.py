"""Using pre-trained models on downstream tasks: retrieval with ITM re-ranking, zero-shot
classification, VQA (classifier or answer ranking). Import the submodules directly
(``vlp.adapt.retrieval``, ``vlp.adapt.zeroshot``, ``vlp.adapt.vqa``)."""
