//! The model package reader/writer (being built).
