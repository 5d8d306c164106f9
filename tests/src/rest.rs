//! A small REST client for tests: every answer as (status, JSON, content type).

use reqwest::Method;
use serde_json::Value;

#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    pub base: String,
    pub token: String,
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub body: Value,
    pub content_type: String,
}

impl Resp {
    /// The problem+json `code` of an error answer.
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }

    /// Asserts an error answer: status, problem+json, stable code.
    pub fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(
            self.status, status,
            "expected {status} {code}, got {self:?}"
        );
        assert_eq!(
            self.content_type, "application/problem+json",
            "not problem+json: {self:?}"
        );
        assert_eq!(self.code(), code, "wrong code: {self:?}");
        assert!(
            self.body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "no detail: {self:?}"
        );
    }
}

impl Api {
    pub fn new(base: &str, token: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
        }
    }

    /// The same API through `http` (e.g. a client trusting the cluster CA).
    pub fn with_client(self, http: reqwest::Client) -> Self {
        Self { http, ..self }
    }

    pub fn with_token(&self, token: &str) -> Self {
        Self {
            token: token.to_string(),
            ..self.clone()
        }
    }

    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, &str)>,
        token: Option<&str>,
    ) -> Resp {
        let mut rb = self
            .http
            .request(method, format!("{}/api/v1{}", self.base, path));
        if let Some(t) = token {
            rb = rb.header("authorization", format!("Bearer {t}"));
        }
        if let Some((ct, b)) = body {
            rb = rb.header("content-type", ct).body(b.to_string());
        }
        let resp = rb.send().await.expect("HTTP request");
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Resp {
            status,
            body,
            content_type,
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.raw(Method::GET, path, None, Some(&self.token)).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.raw(
            Method::POST,
            path,
            Some(("application/json", &body.to_string())),
            Some(&self.token),
        )
        .await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Resp {
        self.raw(
            Method::PATCH,
            path,
            Some(("application/json", &body.to_string())),
            Some(&self.token),
        )
        .await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.raw(Method::DELETE, path, None, Some(&self.token))
            .await
    }

    /// GET that must succeed; returns the body.
    pub async fn ok(&self, path: &str) -> Value {
        let r = self.get(path).await;
        assert_eq!(r.status, 200, "GET {path}: {r:?}");
        r.body
    }
}
