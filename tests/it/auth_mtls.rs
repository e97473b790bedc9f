//! mTLS (placeholder)
