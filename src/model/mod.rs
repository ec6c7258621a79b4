//! Model definitions and the typed configuration. (being built)
