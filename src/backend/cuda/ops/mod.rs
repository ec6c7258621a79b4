//! Safe launchers, one module per kernel family group. Each validates every size and buffer
//! length before it launches and returns an error naming what is wrong; launches are
//! asynchronous on the [`super::Gpu`]'s stream.

pub mod attention;
pub mod llm;
pub mod matmul;
pub mod vision;
