//! GGUF reader (being built).
