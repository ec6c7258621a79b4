//! Report-quality metrics (BLEU, ROUGE-L, METEOR): see issue "medregion eval".
