//! Sans-IO tunnel protocol (DESIGN §4).
