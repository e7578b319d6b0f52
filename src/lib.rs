//! Shared pieces of airomem's examples and integration tests: not part of the library.
