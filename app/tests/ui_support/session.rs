//! Signing in to the pages as a browser does, for tests that read them.

/// The `name=value` part of each `Set-Cookie` of `response`.
pub fn set_cookies(response: &reqwest::Response) -> Vec<String> {
    response
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .map(str::to_owned)
        .collect()
}

/// The value of the hidden `csrf` field of a form in `html`, if there is one.
pub fn csrf_field(html: &str) -> Option<String> {
    let at = html.find("name=\"csrf\"")?;
    // The input's value, before or after its name.
    let start = html[..at].rfind('<')?;
    let end = at + html[at..].find('>')?;
    let tag = &html[start..end];
    let value = tag.split("value=\"").nth(1)?;
    Some(value.split('"').next()?.to_owned())
}

/// Signs in to the pages with `token` as a browser does (POST /sign-in) and returns
/// the `Cookie` header value that keeps the session.
pub async fn sign_in_with(base_url: &str, token: &str) -> String {
    let client = no_redirects(None);
    let form = client
        .get(format!("{base_url}/sign-in"))
        .send()
        .await
        .expect("sign-in page");
    let mut cookies = set_cookies(&form);
    let html = form.text().await.expect("sign-in page body");
    let csrf = csrf_field(&html);
    let mut fields = vec![("token", token)];
    if let Some(csrf) = &csrf {
        fields.push(("csrf", csrf.as_str()));
    }
    let mut request = client
        .post(format!("{base_url}/sign-in"))
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(form_body(&fields));
    if !cookies.is_empty() {
        request = request.header(reqwest::header::COOKIE, cookies.join("; "));
    }
    let response = request.send().await.expect("sign-in request");
    assert!(
        response.status().is_redirection() || response.status().is_success(),
        "sign-in: {}",
        response.status()
    );
    let session = set_cookies(&response);
    assert!(
        session.iter().any(|c| c.starts_with("kubernaut_session=")),
        "no session cookie: {session:?}"
    );
    cookies.retain(|c| {
        !session
            .iter()
            .any(|s| s.split('=').next() == c.split('=').next())
    });
    cookies.extend(session);
    cookies.join("; ")
}

/// A client that follows no redirects and sends `cookie`, if any.
pub fn no_redirects(cookie: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(cookie) = cookie {
        headers.insert(
            reqwest::header::COOKIE,
            reqwest::header::HeaderValue::from_str(cookie).expect("a cookie header"),
        );
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("an HTTP client")
}

/// A `application/x-www-form-urlencoded` body, as a browser posts a form.
pub fn form_body(fields: &[(&str, &str)]) -> String {
    let encode = |text: &str| -> String {
        text.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    fields
        .iter()
        .map(|(name, value)| format!("{}={}", encode(name), encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}
