//! The REST client: bearer auth, JSON in and out, and problem+json errors turned
//! into one clear line with the server's `code`.

use anyhow::Context;
use ferry_api::Problem;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

/// An error answer from the server.
#[derive(Debug)]
pub struct ApiFailure {
    pub status: StatusCode,
    pub code: String,
    pub detail: String,
    pub reasons: Vec<ferry_api::problem::Reason>,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} [{}, HTTP {}]",
            self.detail,
            self.code,
            self.status.as_u16()
        )?;
        for r in &self.reasons {
            write!(f, "\n  - {}: {}", r.code, r.detail)?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiFailure {}

impl Client {
    /// `ca_pem`: the only certificate authority to trust for an `https://` base
    /// (the cluster CA); `None` trusts the system's roots.
    pub fn new(base: &str, token: Option<String>, ca_pem: Option<&[u8]>) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .use_rustls_tls();
        if let Some(pem) = ca_pem {
            let ca = reqwest::Certificate::from_pem(pem).context("read the CA certificate")?;
            builder = builder
                .tls_built_in_root_certs(false)
                .add_root_certificate(ca);
        }
        let http = builder.build()?;
        Ok(Self {
            http,
            base: format!("{}/api/v1", base.trim_end_matches('/')),
            token,
        })
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut rb = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = &self.token {
            rb = rb.bearer_auth(t);
        }
        rb
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.request(Method::GET, path)).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.send(self.request(Method::POST, path).json(body)).await
    }

    pub async fn patch<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.send(self.request(Method::PATCH, path).json(body))
            .await
    }

    /// A DELETE whose answer has a body.
    pub async fn delete_json<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.request(Method::DELETE, path)).await
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<()> {
        let resp = self
            .request(Method::DELETE, path)
            .send()
            .await
            .map_err(connect_error)?;
        check(resp).await.map(|_| ())
    }

    /// A GET whose answer is text.
    pub async fn get_text(&self, path: &str) -> anyhow::Result<String> {
        let resp = self
            .request(Method::GET, path)
            .send()
            .await
            .map_err(connect_error)?;
        Ok(check(resp).await?.text().await?)
    }

    /// A streaming GET (Server-Sent Events).
    pub async fn stream(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        let resp = self
            .request(Method::GET, path)
            .send()
            .await
            .map_err(connect_error)?;
        check(resp).await
    }

    async fn send<T: DeserializeOwned>(&self, rb: reqwest::RequestBuilder) -> anyhow::Result<T> {
        let resp = rb.send().await.map_err(connect_error)?;
        let resp = check(resp).await?;
        resp.json::<T>()
            .await
            .context("the server's answer was not the JSON expected")
    }
}

fn connect_error(e: reqwest::Error) -> anyhow::Error {
    // The reason is at the bottom of the chain (reqwest → hyper → io → rustls).
    let mut causes = Vec::new();
    let mut untrusted = None;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = cur {
        causes.push(err.to_string());
        // io::Error's `source()` skips the error it wraps; look inside (io
        // errors nest: hyper's wraps tokio-rustls's, which wraps rustls's).
        let mut inner: &(dyn std::error::Error + 'static) = err;
        while let Some(wrapped) = inner
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            inner = wrapped;
        }
        if let Some(rustls::Error::InvalidCertificate(why)) = inner.downcast_ref::<rustls::Error>()
        {
            untrusted = Some(format!("{why:?}"));
        }
        cur = err.source();
    }
    causes.dedup();
    if let Some(why) = untrusted {
        return anyhow::anyhow!(
            "the control plane's certificate is not trusted ({why}): give the cluster CA with \
             --ca-cert FILE (it is ca.pem in the control plane's data directory) or \
             --data-dir DIR"
        );
    }
    anyhow::anyhow!(
        "cannot reach the control plane: {} (is FERRY_URL right?)",
        causes.join(": ")
    )
}

async fn check(resp: reqwest::Response) -> anyhow::Result<reqwest::Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let text = resp.text().await.unwrap_or_default();
    let failure = match serde_json::from_str::<Problem>(&text) {
        Ok(p) => ApiFailure {
            status,
            code: p.code,
            detail: p.detail,
            reasons: p.reasons,
        },
        Err(_) => ApiFailure {
            status,
            code: "http_error".into(),
            detail: text.trim().to_string(),
            reasons: vec![],
        },
    };
    Err(failure.into())
}
