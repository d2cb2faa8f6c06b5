//! A fault-injecting HTTP proxy for the S3 tests: it sits between vaultfs's S3 client and
//! a real S3 server (the RGW), passes requests through, and on a seeded share of them
//! injects a fault of the HTTP layer: 503 SlowDown, 500 InternalError, 400
//! RequestTimeout, the connection closed before the answer's headers (after the request
//! reached the server: its answer is lost) or in the middle of the body, a body shorter
//! than its `Content-Length`, a bit flipped in an object's body, a stall (no answer for
//! longer than the client's attempt timeout), a 200 whose body is an `<Error>` on
//! CompleteMultipartUpload (the upload is not completed), a 404 on the GET of an object
//! right after its PUT, a listing split into two pages whose second page fails, and a
//! listing missing the keys written last.
//!
//! Plain `std::net` with a thread per client connection; each request is sent to the
//! server on a connection of its own and its answer read whole before it is passed on
//! (so faults can change it). Requests are never changed: they are signed. Listing pages
//! the proxy splits are answered from the listing it split (the second page's
//! continuation token is the proxy's own).
//!
//! Faults are drawn from a hash of the seed, the request's kind and path, and how many
//! requests of that kind and path came before, so the draws do not depend on how the
//! client's threads interleave. Closing a connection is a plain close (FIN): std cannot
//! set `SO_LINGER` to send an RST, and the client treats both alike (a connection error
//! before or during the answer).
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

/// What the proxy can do to a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HttpFault {
    SlowDown,
    InternalError,
    RequestTimeout,
    /// The request reaches the server; the connection closes before the answer's headers.
    ResetBeforeHeaders,
    /// The answer's headers and half its body, then the connection closes.
    ResetMidBody,
    /// The whole `Content-Length` announced, fewer bytes sent, the connection closed.
    ShortBody,
    /// One bit of an object's body flipped (GET of an object).
    BitFlip,
    /// No answer for the stall time, then the connection closes.
    Stall,
    /// CompleteMultipartUpload answered 200 with an `<Error>` body, without reaching the
    /// server.
    ErrorIn200,
    /// A GET or HEAD of an object PUT through the proxy a moment ago answered 404.
    NotFoundAfterPut,
    /// A listing answered as two pages, the second one failing (500).
    FailingPage,
    /// A listing without the keys PUT last through the proxy.
    MissingNewest,
}

impl HttpFault {
    pub fn name(self) -> &'static str {
        match self {
            HttpFault::SlowDown => "503 SlowDown",
            HttpFault::InternalError => "500 InternalError",
            HttpFault::RequestTimeout => "400 RequestTimeout",
            HttpFault::ResetBeforeHeaders => "closed before headers",
            HttpFault::ResetMidBody => "closed mid-body",
            HttpFault::ShortBody => "short body",
            HttpFault::BitFlip => "bit flip",
            HttpFault::Stall => "stall",
            HttpFault::ErrorIn200 => "200 with an Error (complete multipart)",
            HttpFault::NotFoundAfterPut => "404 after PUT",
            HttpFault::FailingPage => "failing listing page",
            HttpFault::MissingNewest => "listing missing the newest keys",
        }
    }
}

/// The kinds of request, as the proxy tells them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReqKind {
    Get,
    Head,
    Put,
    UploadPart,
    CreateMultipart,
    CompleteMultipart,
    AbortMultipart,
    Delete,
    DeleteMany,
    List,
    Other,
}

impl ReqKind {
    pub fn name(self) -> &'static str {
        match self {
            ReqKind::Get => "get",
            ReqKind::Head => "head",
            ReqKind::Put => "put",
            ReqKind::UploadPart => "upload part",
            ReqKind::CreateMultipart => "create multipart",
            ReqKind::CompleteMultipart => "complete multipart",
            ReqKind::AbortMultipart => "abort multipart",
            ReqKind::Delete => "delete",
            ReqKind::DeleteMany => "delete many",
            ReqKind::List => "list",
            ReqKind::Other => "other",
        }
    }

    /// The faults that make sense for this kind of request.
    pub fn menu(self) -> &'static [HttpFault] {
        use HttpFault::*;
        match self {
            ReqKind::Get => &[
                SlowDown,
                InternalError,
                RequestTimeout,
                ResetBeforeHeaders,
                ResetMidBody,
                ShortBody,
                BitFlip,
                BitFlip,
                Stall,
                NotFoundAfterPut,
                NotFoundAfterPut,
            ],
            ReqKind::Head => &[
                SlowDown,
                InternalError,
                ResetBeforeHeaders,
                Stall,
                NotFoundAfterPut,
            ],
            ReqKind::Put | ReqKind::UploadPart | ReqKind::CreateMultipart => &[
                SlowDown,
                InternalError,
                RequestTimeout,
                ResetBeforeHeaders,
                Stall,
            ],
            ReqKind::CompleteMultipart => &[
                SlowDown,
                InternalError,
                ResetBeforeHeaders,
                ShortBody,
                ErrorIn200,
                ErrorIn200,
                ErrorIn200,
            ],
            ReqKind::Delete | ReqKind::DeleteMany | ReqKind::AbortMultipart => {
                &[SlowDown, InternalError, ResetBeforeHeaders, Stall]
            }
            ReqKind::List => &[
                SlowDown,
                InternalError,
                ResetBeforeHeaders,
                ResetMidBody,
                ShortBody,
                FailingPage,
                FailingPage,
                MissingNewest,
                MissingNewest,
            ],
            ReqKind::Other => &[],
        }
    }
}

/// What the proxy injects, and how often.
#[derive(Clone, Debug)]
pub struct Plan {
    pub seed: u64,
    /// The chance of a fault on a request, in thousandths.
    pub per_mille: u32,
    /// How long a stall holds a request (longer than the client's attempt timeout).
    pub stall: Duration,
    /// Listings whose `prefix` contains one of these never miss their newest keys.
    pub spare_listings: Vec<String>,
}

#[derive(Default)]
struct State {
    plan: Option<Plan>,
    /// Requests so far, per kind and path, while a plan is set.
    seen: HashMap<(ReqKind, String), u64>,
    injected: BTreeMap<HttpFault, u64>,
    requests: BTreeMap<ReqKind, u64>,
    /// Paths PUT through the proxy, the newest last.
    recent_puts: VecDeque<String>,
    /// Second pages of split listings, by the continuation token given out: the rest of
    /// the listing, or `None` for a page that fails.
    pages: HashMap<String, Option<Vec<u8>>>,
    next_token: u64,
    /// Faults for the next requests of a kind, before any drawn one.
    forced: Vec<(ReqKind, HttpFault)>,
    /// Every request held until [`FaultProxy::lift_stall`] (a stalled backend).
    stall_all: bool,
    /// Requests held by `stall_all` right now, and in all.
    held: u64,
    held_total: u64,
}

struct Shared {
    upstream: SocketAddr,
    state: Mutex<State>,
    lifted: Condvar,
    stop: AtomicBool,
}

/// A running proxy; stops accepting when dropped.
pub struct FaultProxy {
    shared: Arc<Shared>,
    addr: SocketAddr,
}

/// How many recent PUTs count as "a moment ago".
const RECENT_PUTS: usize = 8;

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn hash_str(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl FaultProxy {
    /// Starts a proxy on a free port of 127.0.0.1 in front of the server at `endpoint`
    /// (`http://host:port`), passing everything through until [`FaultProxy::set_plan`].
    pub fn start(endpoint: &str) -> FaultProxy {
        use std::net::ToSocketAddrs;
        let host = endpoint
            .strip_prefix("http://")
            .expect("an http:// endpoint")
            .trim_end_matches('/');
        let upstream = host
            .to_socket_addrs()
            .expect("resolve the S3 endpoint")
            .next()
            .expect("an address");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            upstream,
            state: Mutex::new(State::default()),
            lifted: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                thread::spawn(move || serve(&s, conn));
            }
        });
        FaultProxy { shared, addr }
    }

    /// The URL to give the S3 client.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Injects faults by `plan` from now on (`None`: passes everything through).
    pub fn set_plan(&self, plan: Option<Plan>) {
        let mut s = self.lock();
        s.plan = plan;
        s.seen.clear();
    }

    /// The faults injected so far, by kind.
    pub fn injected(&self) -> BTreeMap<&'static str, u64> {
        self.lock()
            .injected
            .iter()
            .map(|(f, n)| (f.name(), *n))
            .collect()
    }

    pub fn injected_total(&self) -> u64 {
        self.lock().injected.values().sum()
    }

    /// Requests seen so far, by kind.
    pub fn requests(&self) -> BTreeMap<&'static str, u64> {
        self.lock()
            .requests
            .iter()
            .map(|(k, n)| (k.name(), *n))
            .collect()
    }

    /// Injects `fault` into the next request of `kind` (whatever the plan; with no plan,
    /// stalls last 2.5 s).
    pub fn force(&self, kind: ReqKind, fault: HttpFault) {
        self.lock().forced.push((kind, fault));
    }

    /// Holds every request from now on until [`FaultProxy::lift_stall`]: a server that
    /// accepts connections and never answers.
    pub fn stall_everything(&self) {
        self.lock().stall_all = true;
    }

    /// Lets every held request go on to the server, and the next ones through.
    pub fn lift_stall(&self) {
        self.lock().stall_all = false;
        self.shared.lifted.notify_all();
    }

    /// How many requests are held by [`FaultProxy::stall_everything`] right now.
    pub fn held(&self) -> u64 {
        self.lock().held
    }

    /// How many requests [`FaultProxy::stall_everything`] has held in all.
    pub fn held_total(&self) -> u64 {
        self.lock().held_total
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.lift_stall();
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
    }
}

/// One HTTP request as read from the client.
struct Request {
    head: Vec<u8>,
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    fn query(&self) -> &str {
        self.target.split_once('?').map_or("", |(_, q)| q)
    }

    fn has_param(&self, name: &str) -> bool {
        self.query()
            .split('&')
            .any(|p| p == name || p.starts_with(&format!("{name}=")))
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.query()
            .split('&')
            .find_map(|p| p.strip_prefix(&format!("{name}=")))
    }

    fn kind(&self) -> ReqKind {
        let object = self.path().trim_start_matches('/').contains('/');
        match self.method.as_str() {
            "GET" if self.has_param("list-type") => ReqKind::List,
            "GET" if object && self.query().is_empty() => ReqKind::Get,
            "GET" if object && self.has_param("x-id") && !self.has_param("uploadId") => {
                ReqKind::Get
            }
            "HEAD" if object => ReqKind::Head,
            "PUT" if object && self.has_param("uploadId") => ReqKind::UploadPart,
            "PUT" if object => ReqKind::Put,
            "POST" if self.has_param("uploads") => ReqKind::CreateMultipart,
            "POST" if self.has_param("uploadId") => ReqKind::CompleteMultipart,
            "POST" if self.has_param("delete") => ReqKind::DeleteMany,
            "DELETE" if self.has_param("uploadId") => ReqKind::AbortMultipart,
            "DELETE" if object => ReqKind::Delete,
            _ => ReqKind::Other,
        }
    }
}

/// One HTTP response as read from the server (body de-chunked).
struct Response {
    status: u16,
    /// The status line and headers, without `Content-Length` and `Transfer-Encoding`.
    lines: Vec<String>,
    body: Vec<u8>,
    /// A HEAD's `Content-Length` (the object's size), passed on as it was.
    head_length: Option<String>,
}

impl Response {
    fn write_to(&self, w: &mut impl Write, body: &[u8], announced: usize) -> std::io::Result<()> {
        let mut head = String::new();
        for l in &self.lines {
            head.push_str(l);
            head.push_str("\r\n");
        }
        match &self.head_length {
            Some(n) => head.push_str(&format!("Content-Length: {n}\r\n\r\n")),
            None => head.push_str(&format!("Content-Length: {announced}\r\n\r\n")),
        }
        w.write_all(head.as_bytes())?;
        w.write_all(body)?;
        w.flush()
    }

    fn made(status: u16, reason: &str, body: &str) -> Response {
        Response {
            status,
            lines: vec![
                format!("HTTP/1.1 {status} {reason}"),
                "Content-Type: application/xml".to_string(),
                "x-amz-request-id: fault-proxy".to_string(),
            ],
            body: body.as_bytes().to_vec(),
            head_length: None,
        }
    }
}

fn error_body(code: &str, message: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>{message}</Message><RequestId>fault-proxy</RequestId></Error>"
    )
}

fn read_line(r: &mut impl BufRead) -> std::io::Result<Option<String>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    Ok(Some(line.trim_end_matches(['\r', '\n']).to_string()))
}

/// A status or request line and its headers.
type Head = (String, Vec<(String, String)>);

fn read_headers(r: &mut impl BufRead) -> std::io::Result<Option<Head>> {
    let Some(first) = read_line(r)? else {
        return Ok(None);
    };
    let mut headers = Vec::new();
    loop {
        let line = read_line(r)?
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "headers"))?;
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    Ok(Some((first, headers)))
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Reads a body by `Content-Length` or chunked encoding (returned de-chunked).
fn read_body(
    r: &mut impl BufRead,
    headers: &[(String, String)],
    to_eof: bool,
) -> std::io::Result<Vec<u8>> {
    if header(headers, "transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        let mut body = Vec::new();
        loop {
            let size = read_line(r)?.unwrap_or_default();
            let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| std::io::Error::other("bad chunk size"))?;
            if size == 0 {
                // Trailers, up to the empty line.
                while read_line(r)?.is_some_and(|l| !l.is_empty()) {}
                return Ok(body);
            }
            let at = body.len();
            body.resize(at + size, 0);
            r.read_exact(&mut body[at..])?;
            read_line(r)?;
        }
    }
    match header(headers, "content-length").and_then(|v| v.parse::<usize>().ok()) {
        Some(n) => {
            let mut body = vec![0; n];
            r.read_exact(&mut body)?;
            Ok(body)
        }
        None if to_eof => {
            let mut body = Vec::new();
            r.read_to_end(&mut body)?;
            Ok(body)
        }
        None => Ok(Vec::new()),
    }
}

fn read_request(r: &mut BufReader<TcpStream>) -> std::io::Result<Option<Request>> {
    let Some((first, headers)) = read_headers(r)? else {
        return Ok(None);
    };
    let mut parts = first.split(' ');
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    if header(&headers, "expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        let w = r.get_mut();
        w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let body = read_body(r, &headers, false)?;
    let mut head = Vec::new();
    head.extend_from_slice(first.as_bytes());
    head.extend_from_slice(b"\r\n");
    for (k, v) in &headers {
        if k.eq_ignore_ascii_case("transfer-encoding") || k.eq_ignore_ascii_case("expect") {
            continue; // the body goes on with a Content-Length
        }
        head.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    if header(&headers, "transfer-encoding").is_some() {
        head.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    Ok(Some(Request {
        head,
        method,
        target,
        headers,
        body,
    }))
}

/// Sends a request to the server on a connection of its own and reads the answer whole.
fn forward(upstream: SocketAddr, req: &Request) -> std::io::Result<Response> {
    let mut up = TcpStream::connect_timeout(&upstream, Duration::from_secs(10))?;
    up.set_read_timeout(Some(Duration::from_secs(120)))?;
    up.write_all(&req.head)?;
    up.write_all(&req.body)?;
    up.flush()?;
    let mut r = BufReader::new(up);
    loop {
        let (first, headers) = read_headers(&mut r)?
            .ok_or_else(|| std::io::Error::other("the server closed without an answer"))?;
        let status: u16 = first
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if status == 100 {
            continue;
        }
        let no_body = req.method == "HEAD" || status == 204 || status == 304;
        let body = if no_body {
            Vec::new()
        } else {
            read_body(&mut r, &headers, true)?
        };
        let mut lines = vec![first];
        for (k, v) in &headers {
            if k.eq_ignore_ascii_case("content-length")
                || k.eq_ignore_ascii_case("transfer-encoding")
                || k.eq_ignore_ascii_case("connection")
            {
                continue;
            }
            lines.push(format!("{k}: {v}"));
        }
        let head_length = if req.method == "HEAD" {
            header(&headers, "content-length").map(str::to_string)
        } else {
            None
        };
        return Ok(Response {
            status,
            lines,
            body,
            head_length,
        });
    }
}

/// The `<Contents>` elements of a ListObjectsV2 answer: (start, end, key) byte ranges.
fn contents(xml: &str) -> Vec<(usize, usize, String)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(s) = xml[at..].find("<Contents>") {
        let s = at + s;
        let Some(e) = xml[s..].find("</Contents>") else {
            break;
        };
        let e = s + e + "</Contents>".len();
        let el = &xml[s..e];
        let key = el
            .split_once("<Key>")
            .and_then(|(_, r)| r.split_once("</Key>"))
            .map_or(String::new(), |(k, _)| k.to_string());
        out.push((s, e, key));
        at = e;
    }
    out
}

/// `xml` with only the `<Contents>` elements `keep` says yes to.
fn filter_contents(xml: &str, mut keep: impl FnMut(usize, &str) -> bool) -> String {
    let els = contents(xml);
    let Some(first) = els.first() else {
        return xml.to_string();
    };
    let last = els.last().unwrap().1;
    let mut out = xml[..first.0].to_string();
    for (i, (s, e, k)) in els.iter().enumerate() {
        if keep(i, k) {
            out.push_str(&xml[*s..*e]);
        }
    }
    out.push_str(&xml[last..]);
    out
}

/// A listing answer without the keys PUT last; `None` when none of them is listed.
fn without_newest(xml: &str, recent: &[String]) -> Option<String> {
    let listed = contents(xml);
    if !listed.iter().any(|(_, _, k)| recent.contains(k)) {
        return None;
    }
    Some(filter_contents(xml, |_, k| {
        !recent.contains(&k.to_string())
    }))
}

fn close(conn: &TcpStream) {
    let _ = conn.shutdown(Shutdown::Both);
}

/// Serves one client connection until it closes.
fn serve(s: &Shared, conn: TcpStream) {
    let _ = conn.set_nodelay(true);
    let Ok(clone) = conn.try_clone() else { return };
    let mut reader = BufReader::new(clone);
    let mut conn = conn;
    while let Ok(Some(req)) = read_request(&mut reader) {
        if !handle(s, &mut conn, &req) {
            close(&conn);
            return;
        }
    }
}

/// The object key of a request's path (`/bucket/key` in path style), as listings name it.
fn object_key(path: &str) -> String {
    let p = path.trim_start_matches('/');
    let key = p.split_once('/').map_or("", |(_, k)| k);
    percent_decode(key)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Handles one request; `false` when the connection must close.
fn handle(s: &Shared, conn: &mut TcpStream, req: &Request) -> bool {
    let kind = req.kind();
    // A second page of a listing the proxy split.
    if kind == ReqKind::List
        && let Some(token) = req.param("continuation-token")
    {
        // Kept: the client may retry a page.
        let page = s
            .state
            .lock()
            .unwrap()
            .pages
            .get(&percent_decode(token))
            .cloned();
        match page {
            Some(Some(page)) => {
                let r = Response::made(200, "OK", "");
                return r.write_to(conn, &page, page.len()).is_ok();
            }
            Some(None) => {
                let body = error_body("InternalError", "injected: the listing page failed");
                let r = Response::made(500, "Internal Server Error", &body);
                return r.write_to(conn, &r.body, r.body.len()).is_ok();
            }
            None => {}
        }
    }
    let (fault, recent) = {
        let mut st = s.state.lock().unwrap();
        *st.requests.entry(kind).or_default() += 1;
        if st.stall_all {
            st.held_total += 1;
        }
        while st.stall_all {
            st.held += 1;
            st = s.lifted.wait(st).unwrap();
            st.held -= 1;
        }
        let recent: Vec<String> = st.recent_puts.iter().cloned().collect();
        let forced = st.forced.iter().position(|(k, _)| *k == kind);
        let fault = match (forced, st.plan.clone()) {
            (Some(i), plan) => {
                let (_, f) = st.forced.remove(i);
                let plan = plan.unwrap_or(Plan {
                    seed: 0,
                    per_mille: 0,
                    stall: Duration::from_millis(2500),
                    spare_listings: Vec::new(),
                });
                Some((f, mix(hash_str(req.path())), plan))
            }
            (None, Some(plan)) => {
                let menu = kind.menu();
                let id = (kind, req.path().to_string());
                let n = st.seen.entry(id).or_insert(0);
                let h = mix(plan.seed ^ mix(hash_str(req.path()) ^ mix(kind as u64 ^ mix(*n))));
                *n += 1;
                if !menu.is_empty() && h % 1000 < u64::from(plan.per_mille) {
                    Some((menu[((h >> 10) % menu.len() as u64) as usize], mix(h), plan))
                } else {
                    None
                }
            }
            (None, None) => None,
        };
        (fault, recent)
    };
    let count = |f: HttpFault| *s.state.lock().unwrap().injected.entry(f).or_default() += 1;
    let key = object_key(req.path());
    let fault = match fault {
        // Faults that only apply in some cases fall back to passing through.
        Some((HttpFault::NotFoundAfterPut, _, _)) if !recent.contains(&key) => None,
        Some((HttpFault::MissingNewest, _, plan))
            if plan.spare_listings.iter().any(|p| {
                percent_decode(req.param("prefix").unwrap_or("")).contains(p.as_str())
            }) =>
        {
            None
        }
        f => f,
    };
    let made = |status, reason: &str, code: &str| {
        Response::made(
            status,
            reason,
            &error_body(code, "injected by the test proxy"),
        )
    };
    let answer = |conn: &mut TcpStream, r: &Response| r.write_to(conn, &r.body, r.body.len());
    match fault {
        Some((f @ HttpFault::SlowDown, _, _)) => {
            count(f);
            return answer(conn, &made(503, "Slow Down", "SlowDown")).is_ok();
        }
        Some((f @ HttpFault::InternalError, _, _)) => {
            count(f);
            return answer(conn, &made(500, "Internal Server Error", "InternalError")).is_ok();
        }
        Some((f @ HttpFault::RequestTimeout, _, _)) => {
            count(f);
            return answer(conn, &made(400, "Bad Request", "RequestTimeout")).is_ok();
        }
        Some((f @ HttpFault::Stall, _, plan)) => {
            count(f);
            thread::sleep(plan.stall);
            return false;
        }
        Some((f @ HttpFault::ErrorIn200, _, _)) => {
            count(f);
            return answer(conn, &made(200, "OK", "InternalError")).is_ok();
        }
        Some((f @ HttpFault::NotFoundAfterPut, _, _)) => {
            count(f);
            return answer(conn, &made(404, "Not Found", "NoSuchKey")).is_ok();
        }
        _ => {}
    }
    let Ok(resp) = forward(s.upstream, req) else {
        return false;
    };
    if matches!(kind, ReqKind::Put | ReqKind::CompleteMultipart) && resp.status == 200 {
        let mut st = s.state.lock().unwrap();
        st.recent_puts.retain(|k| *k != key);
        if st.recent_puts.len() >= RECENT_PUTS {
            st.recent_puts.pop_front();
        }
        st.recent_puts.push_back(key.clone());
    }
    let body = &resp.body;
    match fault {
        Some((f @ HttpFault::ResetBeforeHeaders, _, _)) => {
            count(f);
            false
        }
        Some((f @ HttpFault::ResetMidBody, _, _)) if body.len() > 1 => {
            count(f);
            let _ = resp.write_to(conn, &body[..body.len() / 2], body.len());
            false
        }
        Some((f @ HttpFault::ShortBody, h, _)) if !body.is_empty() => {
            count(f);
            let keep = (h as usize) % body.len();
            let _ = resp.write_to(conn, &body[..keep], body.len());
            false
        }
        Some((f @ HttpFault::BitFlip, h, _)) if !body.is_empty() && resp.status / 100 == 2 => {
            count(f);
            let mut b = body.clone();
            let bit = h % (8 * b.len() as u64);
            b[(bit / 8) as usize] ^= 1 << (bit % 8);
            resp.write_to(conn, &b, b.len()).is_ok()
        }
        Some((f @ HttpFault::MissingNewest, _, _)) if resp.status == 200 => {
            let xml = String::from_utf8_lossy(body);
            match without_newest(&xml, &recent) {
                Some(x) => {
                    count(f);
                    resp.write_to(conn, x.as_bytes(), x.len()).is_ok()
                }
                None => answer(conn, &resp).is_ok(),
            }
        }
        Some((f @ HttpFault::FailingPage, h, _))
            if resp.status == 200 && contents(&String::from_utf8_lossy(body)).len() >= 2 =>
        {
            let xml = String::from_utf8_lossy(body).into_owned();
            if !xml.contains("<IsTruncated>false</IsTruncated>") {
                return answer(conn, &resp).is_ok();
            }
            let half = contents(&xml).len() / 2;
            // Every other split's second page fails (the client must not take the first
            // page for the whole listing); the others hold the rest (the client must join
            // the pages).
            let fails = h % 2 == 0;
            if fails {
                count(f);
            }
            let rest = filter_contents(&xml, |i, _| i >= half).into_bytes();
            let token = {
                let mut st = s.state.lock().unwrap();
                st.next_token += 1;
                let token = format!("fault-proxy-page-{}", st.next_token);
                st.pages.insert(token.clone(), (!fails).then_some(rest));
                token
            };
            let first = filter_contents(&xml, |i, _| i < half).replace(
                "<IsTruncated>false</IsTruncated>",
                &format!(
                    "<IsTruncated>true</IsTruncated><NextContinuationToken>{token}\
                     </NextContinuationToken>"
                ),
            );
            resp.write_to(conn, first.as_bytes(), first.len()).is_ok()
        }
        _ => answer(conn, &resp).is_ok(),
    }
}
