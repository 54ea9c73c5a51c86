//! Transports for the data plane (DESIGN §4, §10).
