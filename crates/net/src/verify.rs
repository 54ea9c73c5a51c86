//! The client's certificate check: the pin, never a CA.
//!
//! The server's end-entity certificate is accepted iff blake3 of its raw
//! Ed25519 key equals the pin from the node's ledger record. Host names,
//! validity periods and issuers do not apply: the certificate is only the
//! carrier of the key. The handshake signature is still verified (rustls's
//! `verify_tls13_signature` with *ring*'s algorithms), which proves the
//! server holds the pinned key's secret half. TLS 1.2 is refused.

use crate::identity::crypto_provider;
use crate::{cert, identity::pin_of_public_key, NetError};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::{Arc, Mutex};

/// Why the verifier refused a certificate, kept so that the caller gets a
/// [`NetError::PinMismatch`] rather than rustls's generic alert (quinn
/// reduces TLS errors to strings).
#[derive(Clone, Debug)]
enum Rejection {
    WrongPin { got: [u8; 32] },
    NotANodeCertificate { reason: String },
}

#[derive(Debug)]
pub(crate) struct PinVerifier {
    expected: [u8; 32],
    algorithms: WebPkiSupportedAlgorithms,
    rejection: Mutex<Option<Rejection>>,
}

impl PinVerifier {
    /// One verifier per connection attempt, so its rejection is that
    /// attempt's.
    pub(crate) fn new(expected: [u8; 32]) -> Arc<PinVerifier> {
        Arc::new(PinVerifier {
            expected,
            algorithms: crypto_provider().signature_verification_algorithms,
            rejection: Mutex::new(None),
        })
    }

    /// The error to report if this verifier refused the certificate.
    pub(crate) fn rejection_error(&self) -> Option<NetError> {
        let rejection =
            self.rejection.lock().map(|r| r.clone()).unwrap_or_else(|poisoned| poisoned.into_inner().clone());
        rejection.map(|r| match r {
            Rejection::WrongPin { got } => NetError::PinMismatch { expected: self.expected, got },
            Rejection::NotANodeCertificate { reason } => NetError::BadCertificate { reason },
        })
    }

    fn reject(&self, rejection: Rejection) -> rustls::Error {
        if let Ok(mut slot) = self.rejection.lock() {
            *slot = Some(rejection);
        }
        rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure)
    }
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let key = match cert::ed25519_key_of_cert(end_entity) {
            Ok(key) => key,
            Err(reason) => return Err(self.reject(Rejection::NotANodeCertificate { reason })),
        };
        let got = pin_of_public_key(&key);
        if got != self.expected {
            return Err(self.reject(Rejection::WrongPin { got }));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Unreachable: only TLS 1.3 is offered. Refuse if it ever is.
        Err(rustls::Error::General("TLS 1.2 is not accepted".to_string()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    /// The provider's whole list, as an ordinary client offers; a node's
    /// key is Ed25519 whatever is offered, and the pin check holds the rest.
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
