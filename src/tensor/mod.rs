//! Tensor views, dtypes and weights. (being built)
