//! The manifest model.
