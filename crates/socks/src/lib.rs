//! SOCKS5 and HTTP CONNECT parsing (DESIGN §4).
