"""XLM-RoBERTa (bge-m3's backbone, XLMRobertaModel): the same module names and roles as BERT."""

from . import Adapter, register
from .bert import BERT_LAYER

XLM_ROBERTA = register(Adapter(model_type="xlm-roberta", model_class="XLMRobertaModel", positions_after_padding=True,
                               **BERT_LAYER))
