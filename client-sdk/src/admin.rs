//! [`AdminClient`]: the server's calls outside a device's sync, typed with
//! `pufa_core::wire`, over the same [`Transport`] as sync: what admins and
//! coordinators do (org units, tokens, enrolment codes, figures), who a
//! token belongs to, and a new device's enrolment.
//!
//! One request per call, never retried: a person or a tool makes these
//! calls and sees the error, and some are not worth repeating blindly (an
//! enrolment code is spent by its first redemption, whose answer may be the
//! one that was lost).
//!
//! Errors: no answer is [`Error::Unreachable`]; `429` is
//! [`Error::RateLimited`]; every other refusal is [`Error::Server`] with
//! the status and the contract's error code, `401 unauthorized` included
//! (an admin's token is not a device's, so [`Error::Unauthorized`]'s advice
//! to enrol again does not apply).
//!
//! ```no_run
//! # async fn f() -> pufa_client::Result<()> {
//! use pufa_client::admin::AdminClient;
//! use pufa_core::wire::{Role, TokenRequest};
//!
//! let admin = AdminClient::over_http("http://127.0.0.1:8080", "pufa_admin_secret")
//!     .map_err(|e| pufa_client::Error::Unreachable(e.0))?;
//! let issued = admin
//!     .issue_token(&TokenRequest {
//!         role: Role::Field,
//!         org_unit: Some("140106001".into()),
//!         label: Some("柳巷司法所 平板".into()),
//!         device_id: None,
//!     })
//!     .await?;
//! println!("device {} token {}", issued.device_id, issued.token);
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;

use pufa_core::wire::{
    ChecksumResponse, CodeIssued, CodeRequest, EnrollRequest, OrgUnit, PullResponse, RejectionView,
    TokenIssued, TokenRequest, TotalsResponse, Upserted, WhoAmI,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::sync::decode;
use crate::transport::{HttpTransport, Method, Request, Transport, TransportError};

/// Calls the server with one bearer token (an admin's, a coordinator's, or
/// any for [`AdminClient::whoami`]). Cheap to clone.
#[derive(Clone)]
pub struct AdminClient {
    transport: Arc<dyn Transport>,
    token: String,
}

impl std::fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminClient { token: … }")
    }
}

impl AdminClient {
    pub fn new(transport: Arc<dyn Transport>, token: impl Into<String>) -> AdminClient {
        AdminClient {
            transport,
            token: token.into(),
        }
    }

    /// Over HTTP(S) to the server at `base`, e.g. `http://127.0.0.1:8080`.
    ///
    /// # Errors
    /// When the TLS stack cannot be set up ([`HttpTransport::new`]).
    pub fn over_http(base: &str, token: impl Into<String>) -> Result<AdminClient, TransportError> {
        Ok(AdminClient::new(Arc::new(HttpTransport::new(base)?), token))
    }

    /// `GET /v1/whoami`: the device or person the token belongs to.
    ///
    /// # Errors
    /// See the [module](self) documentation.
    pub async fn whoami(&self) -> Result<WhoAmI> {
        self.call(Method::Get, "/v1/whoami", None).await
    }

    /// `POST /v1/enroll`: a one-time enrolment code becomes a new device's
    /// token. Sends no token: any client may redeem a code, even one made
    /// with an empty token.
    ///
    /// # Errors
    /// `401` for a code that is wrong, used or expired, `429` after too many
    /// failed codes; see the [module](self) documentation.
    pub async fn enroll(&self, req: &EnrollRequest) -> Result<TokenIssued> {
        self.send(Method::Post, "/v1/enroll", String::new(), Some(json(req)))
            .await
    }

    /// `PUT /v1/admin/org-units`: adds or replaces these units of the org
    /// tree.
    ///
    /// # Errors
    /// See the [module](self) documentation.
    pub async fn import_org_units(&self, units: &[OrgUnit]) -> Result<Upserted> {
        self.call(Method::Put, "/v1/admin/org-units", Some(json(&units)))
            .await
    }

    /// `POST /v1/admin/tokens`: a new token (for a new device, or a known
    /// one's new secret).
    ///
    /// # Errors
    /// See the [module](self) documentation.
    pub async fn issue_token(&self, req: &TokenRequest) -> Result<TokenIssued> {
        self.call(Method::Post, "/v1/admin/tokens", Some(json(req)))
            .await
    }

    /// `POST /v1/enrollment-codes`: a one-time code a device enrols with.
    ///
    /// # Errors
    /// See the [module](self) documentation.
    pub async fn create_code(&self, req: &CodeRequest) -> Result<CodeIssued> {
        self.call(Method::Post, "/v1/enrollment-codes", Some(json(req)))
            .await
    }

    /// `GET /v1/sync/checksum`: the count and checksum of the records in
    /// the token's scope.
    ///
    /// # Errors
    /// See the [module](self) documentation.
    pub async fn checksum(&self) -> Result<ChecksumResponse> {
        self.call(Method::Get, "/v1/sync/checksum", None).await
    }

    /// `GET /v1/sync/pull`: one page of the change feed after `since`.
    ///
    /// # Errors
    /// See the [module](self) documentation.
    pub async fn pull(&self, since: u64, limit: usize) -> Result<PullResponse> {
        let path = format!("/v1/sync/pull?since={since}&limit={limit}");
        self.call(Method::Get, &path, None).await
    }

    /// `GET /v1/totals?<query>`, e.g. `org=140106&from=2020-01-01&to=2020-12-31`
    /// (empty: the token's own unit, all time).
    ///
    /// # Errors
    /// See the [module](self) documentation.
    pub async fn totals(&self, query: &str) -> Result<TotalsResponse> {
        self.call(Method::Get, &with_query("/v1/totals", query), None)
            .await
    }

    /// `GET /v1/rejections?<query>`, e.g. `org=140106`.
    ///
    /// # Errors
    /// See the [module](self) documentation.
    pub async fn rejections(&self, query: &str) -> Result<Vec<RejectionView>> {
        self.call(Method::Get, &with_query("/v1/rejections", query), None)
            .await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T> {
        self.send(method, path, self.token.clone(), body).await
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        token: String,
        body: Option<Vec<u8>>,
    ) -> Result<T> {
        let r = self
            .transport
            .send(Request {
                method,
                path: path.to_string(),
                token,
                body,
            })
            .await
            .map_err(|e| Error::Unreachable(e.0))?;
        match r.status {
            200..=299 => decode(&r),
            429 => Err(Error::RateLimited {
                retry_after: r.retry_after,
            }),
            _ => Err(Error::refused(&r)),
        }
    }
}

fn json(body: &impl Serialize) -> Vec<u8> {
    // The wire types are structs of strings, numbers and lists: nothing in
    // them can fail to serialise.
    serde_json::to_vec(body).expect("a wire type serialises")
}

fn with_query(path: &str, query: &str) -> String {
    if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Response;
    use std::sync::Mutex;

    /// Answers every request with one canned response and keeps the requests.
    struct Canned {
        answer: Response,
        seen: Mutex<Vec<Request>>,
    }

    #[async_trait::async_trait]
    impl Transport for Canned {
        async fn send(&self, req: Request) -> Result<Response, TransportError> {
            self.seen.lock().unwrap().push(req);
            Ok(self.answer.clone())
        }
    }

    fn client(status: u16, body: &str) -> (AdminClient, Arc<Canned>) {
        let canned = Arc::new(Canned {
            answer: Response {
                status,
                body: body.as_bytes().to_vec(),
                retry_after: Some(std::time::Duration::from_secs(7)),
            },
            seen: Mutex::new(Vec::new()),
        });
        (AdminClient::new(canned.clone(), "secret"), canned)
    }

    #[tokio::test]
    async fn refusals_carry_the_contracts_code() {
        let (admin, _) = client(
            403,
            r#"{"error":{"code":"forbidden","message":"admins only"}}"#,
        );
        match admin.checksum().await {
            Err(Error::Server {
                status: 403,
                code,
                message,
            }) => assert_eq!(
                (code.as_str(), message.as_str()),
                ("forbidden", "admins only")
            ),
            other => panic!("{other:?}"),
        }
        let (admin, _) = client(429, r#"{"error":{"code":"rate_limited","message":"slow"}}"#);
        let err = admin.whoami().await.unwrap_err();
        assert!(
            matches!(err, Error::RateLimited { retry_after: Some(d) } if d.as_secs() == 7),
            "{err:?}"
        );
        assert!(err.to_string().contains("7 s"), "{err}");
    }

    #[tokio::test]
    async fn enrolment_sends_no_token_and_queries_are_appended() {
        let (admin, seen) = client(200, "[]");
        admin.rejections("org=140106").await.unwrap();
        let (admin_enrol, seen_enrol) = client(400, "not json");
        let err = admin_enrol
            .enroll(&EnrollRequest {
                code: "ABCD-EFGH".into(),
                label: None,
            })
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Server { status: 400, code, .. } if code == "unknown"),
            "{err:?}"
        );
        let get = &seen.seen.lock().unwrap()[0];
        assert_eq!(
            (get.method, get.path.as_str(), get.token.as_str()),
            (Method::Get, "/v1/rejections?org=140106", "secret")
        );
        let post = &seen_enrol.seen.lock().unwrap()[0];
        assert_eq!((post.method, post.token.as_str()), (Method::Post, ""));
        assert_eq!(
            post.body.as_deref(),
            Some(br#"{"code":"ABCD-EFGH","label":null}"#.as_slice())
        );
    }
}
