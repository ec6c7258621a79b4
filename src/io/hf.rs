//! Hugging Face checkpoint import (being built).
