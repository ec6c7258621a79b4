//! Block-32 quantized weight formats (Q8_0, Q4_0, Q4_1), structure-of-arrays. (being built)
