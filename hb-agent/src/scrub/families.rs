//! Known token families: the rule table and its compiled form.
//!
//! Owns: every built-in rule (name, literal keywords, precise regex, window, checks) and
//! their compiled form: the keyword anchors (found by `scan`) and the rule matchers
//! (`matcher`).
//! Must never: run a regex over the whole input (only over a rule's window at a keyword
//! hit), or report anything about a match but its position and family name.
//!
//! How a rule matches: the anchor scan reports a keyword at byte `p`; each rule that
//! owns that keyword runs its regex *anchored at `p`* on the window `[p, p + max_len)`
//! (cut at the end of input). The redacted span is the whole match or one capture group,
//! so a span never starts before its keyword: that is what lets the stream scrubber
//! decide a hit once it holds `max_len` bytes after it. A regex may use `$` only where its
//! longest match is shorter than `max_len` (checked by a test), so `$` can only mean
//! "end of input", never "end of window".

use std::ops::Range;

use super::{
    assigned::{self, Assigned},
    matcher::{MAX_GROUP, Matcher, Resume},
    scan::{AnchorScan, ScanKind},
};

/// Extra checks on the redacted span, for families whose shape alone also fits ordinary
/// text (kebab-case words after `sk-`, English after `Bearer`).
#[derive(Clone, Copy)]
pub(super) enum Check {
    None,
    /// Shannon entropy of the span (after `skip` bytes) of at least `bits` per byte.
    Entropy {
        skip: usize,
        bits: f64,
    },
    /// As `Entropy`, and the span holds an upper-case letter, a lower-case letter and
    /// (if `digit`) a digit: random keys do, identifiers and prose rarely all three.
    Mixed {
        skip: usize,
        bits: f64,
        digit: bool,
    },
    /// An assigned value (`name = value`): at least `digits` digits (and, if `letter`, a
    /// letter), entropy of at least `bits`, and none of what placeholders, paths and code
    /// look like (`changeme`, `your_…`, `xxxx`, `/usr/…`, `self.token_value`, `//`).
    /// Also what the name says (see `assigned::credential`).
    Value {
        bits: f64,
        letter: bool,
        digits: usize,
        kind: Assigned,
    },
    /// The user part of a URL's user-info (up to the first `:`) is itself a key: 8 or
    /// more bytes with a digit and entropy of at least 2.5 bits.
    KeyUser,
}

/// One family, as written in the table below.
pub(super) struct Rule {
    /// Stable snake_case name: the `<family>` in `[REDACTED:<family>]`.
    pub name: &'static str,
    /// One line for `hb-agent scrub --list-families`.
    pub about: &'static str,
    /// Literals of which the match starts with one (the regex begins with them). A `|`
    /// marks where the literal searched for starts (see [`Families`]); it is not part of
    /// the keyword.
    pub keywords: &'static [&'static str],
    /// Anchored at the keyword's first byte (a `^` is added); byte-oriented, no Unicode.
    pub regex: &'static str,
    /// Redact this capture group (0: the whole match).
    pub group: usize,
    /// Longest match (and so the window) in bytes; longer tokens are cut here.
    pub max_len: usize,
    /// The byte before the keyword must not be an ASCII letter or digit (`task-…` is
    /// not an `sk-` key).
    pub left_boundary: bool,
    /// A hand-written test that rejects most hits before the regex runs.
    pub quick: Quick,
    pub check: Check,
}

impl Rule {
    /// The rule's compiled regex. The rules run at the secret-ish names (common words)
    /// may take a larger dense DFA (see [`Matcher::for_common_keywords`]).
    pub(super) fn matcher(&self) -> Result<Matcher, Box<regex_automata::meta::BuildError>> {
        if self.keywords == SECRET_NAMES {
            Matcher::for_common_keywords(self.regex)
        } else {
            Matcher::new(self.regex)
        }
    }
}

/// Whether a keyword at `at` starts a word: the byte before is not an ASCII letter or
/// digit — or it is, but only as the end of an escape standing for a separator: `\n`,
/// `\r`, `\t`, `\b`, `\f` (JSON and C strings), `\uXXXX` (JSON; Go writes `&` as
/// `\u0026`), `%XX` (percent-encoding). Reads at most `engine::LOOKBACK` bytes back.
pub(super) fn left_boundary(hay: &[u8], at: usize) -> bool {
    let before = &hay[..at];
    let Some(&last) = before.last() else {
        return true;
    };
    if !last.is_ascii_alphanumeric() {
        return true;
    }
    let hex = |b: &[u8]| b.iter().all(u8::is_ascii_hexdigit);
    match before {
        [.., b'\\', b'n' | b'r' | b't' | b'b' | b'f'] => true,
        [.., b'\\', b'u', a, b, c, d] => hex(&[*a, *b, *c, *d]),
        [.., b'%', a, b] => hex(&[*a, *b]),
        _ => false,
    }
}

/// Cheap rejections for families whose keyword is common in clean text.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Quick {
    None,
    /// After `://` (or `:\/\/`), the first byte that ends a URL's user part is `:` —
    /// the case of `user:password@`; `host/path` and `host:port/` end it otherwise or
    /// have no `@` (the regex decides those). One URL in a few thousand has a user.
    UserInfo,
}

/// The families, most specific first: when two spans start at the same byte and have
/// the same length, the earlier rule names the redaction (`Bearer ghp_…` is a
/// `github_pat`). Generic context rules come last.
/// The secret-ish names of the generic assignment families (each with its case forms).
const SECRET_NAMES: &[&str] = &[
    "s|ecret",
    "S|ecret",
    "SECRET",
    "t|oken",
    "T|oken",
    "TOKEN",
    "p|asswd",
    "P|asswd",
    "PASSWD",
    "p|assword",
    "P|assword",
    "PASSWORD",
    "p|assWord",
    "P|assWord",
    // `api_key`, `api_hash`, `API_SECRET` (`api_url` and the like: see
    // `assigned::PUBLIC_LAST_WORDS`).
    "a|pi_",
    "A|pi_",
    "API_",
    "a|pikey",
    "A|pikey",
    "APIKEY",
    "a|pi-key",
    "A|pi-key",
    "API-KEY",
    // `access_key`, `accessToken`, `ACCESS_CODE`.
    "a|ccess",
    "A|ccess",
    "ACCESS",
    "auth",
    "Auth",
    "AUTH",
    "c|redential",
    "C|redential",
    "CREDENTIAL",
    "c|reds",
    "C|reds",
    "CREDS",
    "p|rivate_key",
    "P|rivate_key",
    "PRIVATE_KEY",
    "key",
    "Key",
    "KEY",
];

/// The length of the longest of [`SECRET_NAMES`] that `name` starts with (as written,
/// without its `|`).
pub(super) fn secret_keyword(name: &[u8]) -> Option<usize> {
    SECRET_NAMES
        .iter()
        .map(|k| k.bytes().filter(|&b| b != b'|'))
        .filter(|k| {
            let k = k.clone();
            k.clone().count() <= name.len() && k.zip(name).all(|(a, &b)| a == b)
        })
        .map(Iterator::count)
        .max()
}

pub(super) const RULES: &[Rule] = &[
    Rule {
        name: "pem_private_key",
        about: "PEM private key block (-----BEGIN … PRIVATE KEY-----), also JSON-escaped; cut at 16 KiB",
        keywords: &["-----|BEGIN "],
        // The body: base64, whitespace, header lines (Proc-Type, DEK-Info: AES-128-CBC,
        // OpenPGP armor's `Version: GnuPG v1.4.11 (GNU/Linux)`, `Comment: … - https://…`)
        // and `\n` escapes; a `-` only before something else than `-`, so `-----END`
        // stops it. Without an END line the body-like text is redacted anyway (fail
        // closed).
        regex: r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----(?:[A-Za-z0-9+/=\s:,\\.()@<>]|-[^-])*(?:-----END [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----)?",
        group: 0,
        max_len: 16 * 1024,
        left_boundary: false,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "jwt",
        about: "JSON Web Token: eyJ… header, payload and signature (base64url, dot-separated); cut at 16 KiB",
        keywords: &["eyJ"],
        regex: r"eyJ[A-Za-z0-9_-]{10,}={0,2}\.[A-Za-z0-9_-]{10,}={0,2}\.[A-Za-z0-9_-]*={0,2}",
        group: 0,
        max_len: 16 * 1024,
        left_boundary: false,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "github_pat",
        about: "GitHub personal access token (ghp_ + 36)",
        keywords: &["ghp_"],
        regex: r"ghp_[A-Za-z0-9]{36,}",
        group: 0,
        max_len: 256,
        left_boundary: false,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "github_oauth",
        about: "GitHub OAuth access token (gho_ + 36)",
        keywords: &["gho_"],
        regex: r"gho_[A-Za-z0-9]{36,}",
        group: 0,
        max_len: 256,
        left_boundary: false,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "github_user_token",
        about: "GitHub App user-to-server token (ghu_ + 36)",
        keywords: &["ghu_"],
        regex: r"ghu_[A-Za-z0-9]{36,}",
        group: 0,
        max_len: 256,
        left_boundary: false,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "github_app_token",
        about: "GitHub App server-to-server / Actions token (ghs_ + 36)",
        keywords: &["ghs_"],
        regex: r"ghs_[A-Za-z0-9]{36,}",
        group: 0,
        max_len: 256,
        left_boundary: false,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "github_refresh_token",
        about: "GitHub refresh token (ghr_ + 36)",
        keywords: &["ghr_"],
        regex: r"ghr_[A-Za-z0-9]{36,}",
        group: 0,
        max_len: 256,
        left_boundary: false,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "github_fine_grained_pat",
        about: "GitHub fine-grained personal access token (github_pat_ + 82)",
        keywords: &["github|_pat_"],
        regex: r"github_pat_[A-Za-z0-9_]{40,}",
        group: 0,
        max_len: 512,
        left_boundary: false,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "gitlab_pat",
        about: "GitLab personal access token (glpat- + 20 or more, routable suffix included)",
        keywords: &["glpat-"],
        regex: r"glpat-[A-Za-z0-9_-]{20,}(?:\.[A-Za-z0-9]{2,9}){0,2}",
        group: 0,
        max_len: 256,
        left_boundary: false,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "google_oauth_token",
        about: "Google OAuth 2 access token (ya29.…)",
        keywords: &["ya29."],
        regex: r"ya29\.[A-Za-z0-9_-]{20,}",
        group: 0,
        max_len: 4096,
        left_boundary: false,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "google_api_key",
        about: "Google API key (AIza + 35)",
        keywords: &["AIza"],
        regex: r"AIza[0-9A-Za-z_-]{35}",
        group: 0,
        max_len: 64,
        left_boundary: false,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "slack_token",
        about: "Slack token (xoxa-, xoxb-, xoxp-, xoxo-, xoxs-, xoxr-, xoxe-, xoxe.xoxb-)",
        keywords: &["xox"],
        regex: r"xox(?:[abposre]|e\.xox[bp])-[A-Za-z0-9-]{10,}",
        group: 0,
        max_len: 512,
        left_boundary: false,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "slack_app_token",
        about: "Slack app-level token (xapp-)",
        keywords: &["xapp-"],
        regex: r"xapp-[0-9]+-[A-Za-z0-9-]{10,}",
        group: 0,
        max_len: 512,
        left_boundary: false,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "slack_webhook",
        about: "Slack incoming-webhook URL (the secret path after hooks.slack.com/)",
        // Also with JSON's escaped slashes (`hooks.slack.com\/services\/…`).
        keywords: &["hooks.slack.com"],
        regex: r"hooks\.slack\.com\\?/((?:services|workflows|triggers)\\?/(?:[A-Za-z0-9_-]|\\?/){20,})",
        group: 1,
        max_len: 512,
        left_boundary: false,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "aws_access_key_id",
        about: "AWS access key id (AKIA, ASIA, ABIA, ACCA, A3T? + 16)",
        keywords: &["AKIA", "ASIA", "ABIA", "ACCA", "A3T"],
        // A word on its own, as gitleaks has it: the shape also occurs inside base64.
        regex: r"((?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z2-7]{16})(?:[^A-Za-z0-9]|$)",
        group: 1,
        max_len: 32,
        left_boundary: true,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "anthropic_api_key",
        about: "Anthropic API key (sk-ant-…)",
        keywords: &["sk-"],
        regex: r"sk-ant-[A-Za-z0-9_-]{20,}",
        group: 0,
        max_len: 512,
        left_boundary: true,
        quick: Quick::None,
        check: Check::Mixed {
            skip: 7,
            bits: 3.0,
            digit: true,
        },
    },
    Rule {
        name: "openai_api_key",
        about: "OpenAI API key (sk-…, sk-proj-…, sk-svcacct-…)",
        keywords: &["sk-"],
        regex: r"sk-[A-Za-z0-9_-]{20,}",
        group: 0,
        max_len: 512,
        left_boundary: true,
        quick: Quick::None,
        check: Check::Mixed {
            skip: 3,
            bits: 3.0,
            digit: true,
        },
    },
    Rule {
        name: "stripe_secret_key",
        about: "Stripe secret or restricted key (sk_/rk_ + live_, test_, prod_)",
        keywords: &[
            "s|k_live_",
            "r|k_live_",
            "s|k_test_",
            "r|k_test_",
            "s|k_prod_",
            "r|k_prod_",
        ],
        regex: r"[sr]k_(?:live|test|prod)_[A-Za-z0-9]{10,}",
        group: 0,
        max_len: 256,
        left_boundary: false,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "stripe_webhook_secret",
        about: "Stripe webhook signing secret (whsec_)",
        keywords: &["whsec_"],
        regex: r"whsec_[A-Za-z0-9+/=]{24,}",
        group: 0,
        max_len: 256,
        left_boundary: false,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "huggingface_token",
        about: "Hugging Face access token (hf_ + 34)",
        keywords: &["hf_"],
        regex: r"hf_[A-Za-z0-9]{30,}",
        group: 0,
        max_len: 128,
        left_boundary: true,
        quick: Quick::None,
        check: Check::Mixed {
            skip: 3,
            bits: 3.0,
            digit: false,
        },
    },
    Rule {
        name: "npm_token",
        about: "npm access token (npm_ + 36)",
        keywords: &["npm_"],
        regex: r"npm_[A-Za-z0-9]{36,}",
        group: 0,
        max_len: 128,
        left_boundary: true,
        quick: Quick::None,
        check: Check::Mixed {
            skip: 4,
            bits: 3.0,
            digit: false,
        },
    },
    Rule {
        name: "pypi_token",
        about: "PyPI / TestPyPI API token (pypi-AgE…)",
        keywords: &["pypi-AgE"],
        regex: r"pypi-AgE[A-Za-z0-9_-]{50,}",
        group: 0,
        max_len: 1024,
        left_boundary: false,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "twilio_api_key",
        about: "Twilio API key SID (SK + 32 hex)",
        keywords: &["SK"],
        regex: r"(SK[0-9a-f]{32})(?:[^0-9A-Za-z]|$)",
        group: 1,
        max_len: 48,
        left_boundary: true,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "twilio_auth_token",
        about: "Twilio auth token or API secret (32 hex) assigned next to the word twilio",
        keywords: &["twilio", "Twilio", "TWILIO"],
        regex: r#"(?i:twilio)[A-Za-z0-9_. -]{0,30}?(?i:token|secret)\\?["']?\s{0,8}[:=]\s{0,8}\\?["']?([0-9a-f]{32})(?:[^0-9A-Za-z]|$)"#,
        group: 1,
        max_len: 128,
        left_boundary: false,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "sendgrid_api_key",
        about: "SendGrid API key (SG. + 22 + . + 43)",
        keywords: &["SG."],
        regex: r"SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}",
        group: 0,
        max_len: 128,
        left_boundary: false,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "azure_storage_key",
        about: "Azure storage account key in a connection string (AccountKey=…)",
        keywords: &["AccountKey="],
        regex: r"AccountKey=((?:[A-Za-z0-9+/]|\\/){40,}={0,2})",
        group: 1,
        max_len: 256,
        left_boundary: false,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "azure_sas_signature",
        about: "Azure shared access signature (sig=… in a SAS URL or connection string)",
        keywords: &["sig="],
        regex: r"sig=((?:[A-Za-z0-9+/]|%2[BbFf]|\\/){30,}(?:=|%3[Dd]){0,2})",
        group: 1,
        max_len: 256,
        left_boundary: true,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "digitalocean_token",
        about: "DigitalOcean token (dop_v1_, doo_v1_, dor_v1_ + 64 hex)",
        keywords: &["dop|_v1_", "doo|_v1_", "dor|_v1_"],
        regex: r"do[opr]_v1_[a-f0-9]{64}",
        group: 0,
        max_len: 80,
        left_boundary: false,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "docker_hub_pat",
        about: "Docker Hub personal access token (dckr_pat_)",
        keywords: &["dckr|_pat_"],
        regex: r"dckr_pat_[A-Za-z0-9_-]{27,}",
        group: 0,
        max_len: 128,
        left_boundary: false,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "shopify_token",
        about: "Shopify access token (shpat_, shpca_, shppa_, shpss_ + 32 hex)",
        keywords: &["shpat_", "shpca_", "shppa_", "shpss_"],
        regex: r"shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}",
        group: 0,
        max_len: 64,
        left_boundary: false,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "age_secret_key",
        about: "age encryption secret key (AGE-SECRET-KEY-1…)",
        keywords: &["AGE-SECRET-KEY-1"],
        regex: r"AGE-SECRET-KEY-1[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58}",
        group: 0,
        max_len: 96,
        left_boundary: false,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "hb_handle",
        about: "hb's own opaque credential handle (hb_cred_ + 32 base64url)",
        keywords: &["hb_cred_"],
        regex: r"hb_cred_[A-Za-z0-9_-]{32}",
        group: 0,
        max_len: 48,
        left_boundary: false,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "onepassword_secret_key",
        about: "1Password account secret key (A3- + account id + 26 random, dash-separated)",
        keywords: &["A3-"],
        regex: r"A3-[A-Z0-9]{6}-[A-Z0-9]{5,11}(?:-[A-Z0-9]{5,6}){3,4}",
        group: 0,
        max_len: 64,
        left_boundary: true,
        quick: Quick::None,
        check: Check::Entropy { skip: 0, bits: 3.0 },
    },
    Rule {
        name: "onepassword_service_token",
        about: "1Password service account token (ops_eyJ…)",
        keywords: &["ops_eyJ"],
        regex: r"ops_eyJ(?:[A-Za-z0-9+/]|\\/){100,}={0,3}",
        group: 0,
        max_len: 4096,
        left_boundary: false,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "adobe_client_secret",
        about: "Adobe client secret (p8e- + 32)",
        keywords: &["p8e-"],
        regex: r"p8e-[A-Za-z0-9]{32}",
        group: 0,
        max_len: 48,
        left_boundary: true,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "airtable_pat",
        about: "Airtable personal access token (pat + 14 . + 64 hex)",
        keywords: &["pat"],
        regex: r"pat[A-Za-z0-9]{14}\.[a-f0-9]{64}",
        group: 0,
        max_len: 96,
        left_boundary: true,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "alibaba_access_key_id",
        about: "Alibaba Cloud AccessKey ID (LTAI + 12 to 20)",
        keywords: &["LTAI"],
        regex: r"(LTAI[A-Za-z0-9]{12,20})(?:[^A-Za-z0-9]|$)",
        group: 1,
        max_len: 32,
        left_boundary: true,
        quick: Quick::None,
        check: Check::Mixed {
            skip: 4,
            bits: 3.0,
            digit: true,
        },
    },
    Rule {
        name: "jfrog_token",
        about: "JFrog / Artifactory API key (AKCp + 69) or reference token (cmVmd + 59)",
        keywords: &["AKCp", "cmVmd"],
        regex: r"(?:AKCp[A-Za-z0-9]{69}|cmVmd[A-Za-z0-9]{59})",
        group: 0,
        max_len: 80,
        left_boundary: true,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "aws_bedrock_api_key",
        about: "Amazon Bedrock API key (ABSK + base64, or bedrock-api-key-…)",
        keywords: &["ABSK", "bedrock-api-key-"],
        regex: r"(?:ABSK[A-Za-z0-9+/]{100,}={0,2}|bedrock-api-key-[A-Za-z0-9+/=%]{20,})",
        group: 0,
        max_len: 2048,
        left_boundary: false,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "clickhouse_cloud_key",
        about: "ClickHouse Cloud API secret (4b1d + 38)",
        keywords: &["4b1d"],
        regex: r"(4b1d[A-Za-z0-9]{38})(?:[^A-Za-z0-9]|$)",
        group: 1,
        max_len: 48,
        left_boundary: true,
        quick: Quick::None,
        check: Check::Mixed {
            skip: 4,
            bits: 3.0,
            digit: true,
        },
    },
    Rule {
        name: "clojars_token",
        about: "Clojars deploy token (CLOJARS_ + 60)",
        keywords: &["CLOJARS_"],
        regex: r"CLOJARS_[A-Za-z0-9]{60}",
        group: 0,
        max_len: 72,
        left_boundary: false,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "cloudflare_origin_ca_key",
        about: "Cloudflare Origin CA key (v1.0- + 24 hex - 146 hex)",
        keywords: &["v1.0-"],
        regex: r"v1\.0-[a-f0-9]{24}-[a-f0-9]{146}",
        group: 0,
        max_len: 180,
        left_boundary: true,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "databricks_token",
        about: "Databricks personal access token (dapi + 32 hex)",
        keywords: &["dapi"],
        regex: r"dapi[a-f0-9]{32}(?:-[0-9])?",
        group: 0,
        max_len: 48,
        left_boundary: true,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "doppler_token",
        about: "Doppler token (dp.pt., dp.st., dp.ct., dp.sa., dp.scim., dp.audit. + 40 or more)",
        keywords: &[
            "dp.pt.",
            "dp.st.",
            "dp.ct.",
            "dp.sa.",
            "dp.scim.",
            "dp.audit.",
        ],
        regex: r"dp\.(?:pt|st|ct|sa|scim|audit)\.[A-Za-z0-9._]{40,}",
        group: 0,
        max_len: 128,
        left_boundary: true,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "duffel_token",
        about: "Duffel API token (duffel_test_ / duffel_live_ + 43)",
        keywords: &["duffel_"],
        regex: r"duffel_(?:test|live)_[A-Za-z0-9_=-]{43}",
        group: 0,
        max_len: 64,
        left_boundary: false,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "dynatrace_token",
        about: "Dynatrace API token (dt0c01. + 24 . + 64)",
        keywords: &["dt0c01."],
        regex: r"dt0c01\.[A-Za-z0-9]{24}\.[A-Za-z0-9]{64}",
        group: 0,
        max_len: 100,
        left_boundary: false,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "easypost_token",
        about: "EasyPost API key (EZAK / EZTK + 54)",
        keywords: &["EZAK", "EZTK"],
        regex: r"EZ[AT]K[A-Za-z0-9]{54}",
        group: 0,
        max_len: 64,
        left_boundary: true,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "facebook_access_token",
        about: "Facebook / Meta access token (EAAC…, EAAM…, 100 or more)",
        keywords: &["EAAC", "EAAM"],
        regex: r"EAA[CM][A-Za-z0-9]{100,}",
        group: 0,
        max_len: 512,
        left_boundary: true,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "square_access_token",
        about: "Square access token or secret (EAAA…, sq0atp-, sq0csp-)",
        keywords: &["EAAA", "sq0atp-", "sq0csp-"],
        regex: r"(?:EAAA|sq0atp-|sq0csp-)[A-Za-z0-9_-]{22,}",
        group: 0,
        max_len: 128,
        left_boundary: true,
        quick: Quick::None,
        check: Check::Mixed {
            skip: 4,
            bits: 3.0,
            digit: true,
        },
    },
    Rule {
        name: "flutterwave_key",
        about: "Flutterwave secret, public or encryption key (FLWSECK…, FLWPUBK…)",
        keywords: &["FLWSECK", "FLWPUBK"],
        regex: r"FLW(?:SECK|PUBK)(?:_TEST)?-[A-Za-z0-9]{12,32}(?:-X)?",
        group: 0,
        max_len: 64,
        left_boundary: false,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "flyio_token",
        about: "Fly.io token (fo1_, fm1a_, fm1r_, fm2_ + base64)",
        keywords: &["fo1_", "fm1a_", "fm1r_", "fm2_"],
        regex: r"f(?:o1|m1[ar]|m2)_[A-Za-z0-9_+/-]{40,}={0,3}",
        group: 0,
        max_len: 4096,
        left_boundary: true,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "frameio_token",
        about: "Frame.io API token (fio-u- + 64)",
        keywords: &["fio-u-"],
        regex: r"fio-u-[A-Za-z0-9_=-]{64}",
        group: 0,
        max_len: 80,
        left_boundary: true,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "gitlab_token",
        about: "GitLab tokens but glpat- (glcbt-, gldt-, glffct-, glft-, glimt-, glagent-, gloas-, glptt-, glrt-, glsoat-, glwt-, GR1348941), routable suffix included",
        keywords: &[
            "glcbt-",
            "gldt-",
            "glffct-",
            "glft-",
            "glimt-",
            "glagent-",
            "gloas-",
            "glptt-",
            "glrt-",
            "glsoat-",
            "glwt-",
            "GR1348941",
        ],
        regex: r"(?:gl(?:cbt|dt|ffct|ft|imt|agent|oas|ptt|rt|soat|wt)-|GR1348941)[A-Za-z0-9_-]{20,}(?:\.[A-Za-z0-9]{2,9}){0,2}",
        group: 0,
        max_len: 512,
        left_boundary: false,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "gitlab_session_cookie",
        about: "GitLab session cookie (_gitlab_session= + 32 hex)",
        keywords: &["_gitlab_session="],
        regex: r"_gitlab_session=([0-9a-f]{32})",
        group: 1,
        max_len: 64,
        left_boundary: false,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "grafana_api_key",
        about: "Grafana API key (eyJrIjoi…)",
        keywords: &["eyJrIjoi"],
        regex: r"eyJrIjoi(?:[A-Za-z0-9+/]|\\/){50,}={0,3}",
        group: 0,
        max_len: 512,
        left_boundary: false,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "grafana_token",
        about: "Grafana Cloud token (glc_) or service account token (glsa_)",
        keywords: &["glc_", "glsa_"],
        regex: r"(?:glc_[A-Za-z0-9+/]{32,}={0,3}|glsa_[A-Za-z0-9]{32}_[A-Fa-f0-9]{8})",
        group: 0,
        max_len: 512,
        left_boundary: true,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "harness_token",
        about: "Harness personal or service account token (pat./sat. + 22 . 24 . 20)",
        keywords: &["pat.", "sat."],
        regex: r"[ps]at\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9]{24}\.[A-Za-z0-9]{20}",
        group: 0,
        max_len: 80,
        left_boundary: true,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "heroku_api_key",
        about: "Heroku API key, new format (HRKU-…)",
        keywords: &["HRKU-"],
        regex: r"HRKU-[A-Za-z0-9_-]{40,}",
        group: 0,
        max_len: 128,
        left_boundary: true,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "huggingface_org_token",
        about: "Hugging Face organisation API token (api_org_ + 34)",
        keywords: &["api_org_"],
        regex: r"api_org_[A-Za-z0-9]{30,}",
        group: 0,
        max_len: 64,
        left_boundary: true,
        quick: Quick::None,
        check: Check::Mixed {
            skip: 8,
            bits: 3.0,
            digit: false,
        },
    },
    Rule {
        name: "infracost_token",
        about: "Infracost API key (ico- + 32)",
        keywords: &["ico-"],
        regex: r"ico-[A-Za-z0-9]{32}",
        group: 0,
        max_len: 48,
        left_boundary: true,
        quick: Quick::None,
        check: Check::Mixed {
            skip: 4,
            bits: 3.0,
            digit: true,
        },
    },
    Rule {
        name: "intra42_secret",
        about: "42 Intra client secret (s-s4t2ud- / s-s4t2af- + 64 hex)",
        keywords: &["s-s4t2"],
        regex: r"s-s4t2(?:ud|af)-[A-Fa-f0-9]{64}",
        group: 0,
        max_len: 80,
        left_boundary: false,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "linear_api_key",
        about: "Linear API key (lin_api_ + 40)",
        keywords: &["lin_api_"],
        regex: r"lin_api_[A-Za-z0-9]{40}",
        group: 0,
        max_len: 56,
        left_boundary: false,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "newrelic_key",
        about: "New Relic user API key (NRAK-), insert key (NRII-), browser key (NRJS-)",
        keywords: &["NRAK-", "NRII-", "NRJS-"],
        regex: r"(?:NRAK-[A-Za-z0-9]{27}|NRII-[A-Za-z0-9_-]{32}|NRJS-[a-f0-9]{19})",
        group: 0,
        max_len: 48,
        left_boundary: false,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "notion_token",
        about: "Notion integration token (ntn_ + 11 digits + 35)",
        keywords: &["ntn_"],
        regex: r"ntn_[0-9]{11}[A-Za-z0-9]{32,}",
        group: 0,
        max_len: 64,
        left_boundary: true,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "octopus_deploy_key",
        about: "Octopus Deploy API key (API- + 26 upper-case letters and digits)",
        keywords: &["API-"],
        regex: r"(API-[A-Z0-9]{26})(?:[^A-Za-z0-9]|$)",
        group: 1,
        max_len: 40,
        left_boundary: true,
        quick: Quick::None,
        check: Check::Entropy { skip: 0, bits: 3.0 },
    },
    Rule {
        name: "openshift_token",
        about: "OpenShift user token (sha256~ + 43)",
        keywords: &["sha256~"],
        regex: r"sha256~[A-Za-z0-9_-]{43}",
        group: 0,
        max_len: 56,
        left_boundary: false,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "perplexity_api_key",
        about: "Perplexity API key (pplx- + 48)",
        keywords: &["pplx-"],
        regex: r"pplx-[A-Za-z0-9]{48}",
        group: 0,
        max_len: 64,
        left_boundary: true,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "planetscale_token",
        about: "PlanetScale token, OAuth token or password (pscale_tkn_, pscale_oauth_, pscale_pw_)",
        keywords: &["pscale_"],
        regex: r"pscale_(?:tkn|oauth|pw)_[A-Za-z0-9_=.-]{32,64}",
        group: 0,
        max_len: 96,
        left_boundary: false,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "postman_api_key",
        about: "Postman API key (PMAK- + 24 hex - 34 hex)",
        keywords: &["PMAK-"],
        regex: r"PMAK-[A-Fa-f0-9]{24}-[A-Fa-f0-9]{34}",
        group: 0,
        max_len: 72,
        left_boundary: false,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "prefect_api_key",
        about: "Prefect API key (pnu_ + 36)",
        keywords: &["pnu_"],
        regex: r"pnu_[A-Za-z0-9]{36}",
        group: 0,
        max_len: 48,
        left_boundary: true,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "pulumi_token",
        about: "Pulumi access token (pul- + 40 hex)",
        keywords: &["pul-"],
        regex: r"pul-[a-f0-9]{40}",
        group: 0,
        max_len: 48,
        left_boundary: true,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "readme_api_key",
        about: "ReadMe API key (rdme_ + 70)",
        keywords: &["rdme_"],
        regex: r"rdme_[a-z0-9]{70}",
        group: 0,
        max_len: 80,
        left_boundary: true,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "rubygems_api_key",
        about: "RubyGems API key (rubygems_ + 48 hex)",
        keywords: &["rubygems_"],
        regex: r"rubygems_[a-f0-9]{48}",
        group: 0,
        max_len: 64,
        left_boundary: true,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "scalingo_token",
        about: "Scalingo API token (tk-us- + 48)",
        keywords: &["tk-us-"],
        regex: r"tk-us-[A-Za-z0-9_-]{48}",
        group: 0,
        max_len: 64,
        left_boundary: true,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "brevo_api_key",
        about: "Brevo (Sendinblue) API key (xkeysib- + 64 hex - 16)",
        keywords: &["xkeysib-"],
        regex: r"xkeysib-[a-f0-9]{64}-[A-Za-z0-9]{16}",
        group: 0,
        max_len: 96,
        left_boundary: false,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "sentry_token",
        about: "Sentry user auth token (sntryu_ + 64 hex) or org token (sntrys_eyJ…)",
        keywords: &["sntryu_", "sntrys_eyJ"],
        regex: r"(?:sntryu_[a-f0-9]{64}|sntrys_eyJ[A-Za-z0-9+/=]{40,}_[A-Za-z0-9+/]{43})",
        group: 0,
        max_len: 512,
        left_boundary: false,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "settlemint_token",
        about: "SettleMint access token (sm_aat_, sm_pat_, sm_sat_ + 16)",
        keywords: &["sm_aat_", "sm_pat_", "sm_sat_"],
        regex: r"sm_[aps]at_[A-Za-z0-9]{16}",
        group: 0,
        max_len: 32,
        left_boundary: true,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "shippo_token",
        about: "Shippo API token (shippo_live_ / shippo_test_ + 40 hex)",
        keywords: &["shippo_"],
        regex: r"shippo_(?:live|test)_[a-fA-F0-9]{40}",
        group: 0,
        max_len: 64,
        left_boundary: false,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "vault_token",
        about: "HashiCorp Vault token (hvs., hvb., hvr.)",
        keywords: &["hvs.", "hvb.", "hvr."],
        regex: r"hv[sbr]\.[A-Za-z0-9_-]{24,}",
        group: 0,
        max_len: 512,
        left_boundary: true,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "yandex_token",
        about: "Yandex Cloud API key (AQVN…) or IAM token (t1.…)",
        keywords: &["AQVN", "t1."],
        regex: r"(?:AQVN[A-Za-z0-9_-]{35,38}|t1\.[A-Za-z0-9_-]+={0,2}\.[A-Za-z0-9_-]{86})",
        group: 0,
        max_len: 512,
        left_boundary: true,
        quick: Quick::None,
        check: Check::None,
    },
    // Context rules: a secret recognised by what stands before it.
    Rule {
        name: "aws_secret_access_key",
        about: "AWS secret access key (40 base64) assigned to a *secret_access_key name",
        keywords: &[
            "secret_acce|ss_key",
            "SECRET_ACCE|SS_KEY",
            "SecretAcce|ssKey",
            "secretAcce|ssKey",
            "secret-acce|ss-key",
        ],
        regex: r#"(?i:secret[_-]?access[_-]?key)\\?["']?\s{0,8}[:=]\s{0,8}(?:[|>][-+]?\s{1,40})?\\?["']?((?:[A-Za-z0-9+]|\\?/){40})(?:[^A-Za-z0-9/+=\\]|\\[^/]|$)"#,
        group: 1,
        max_len: 192,
        left_boundary: false,
        quick: Quick::None,
        check: Check::Mixed {
            skip: 0,
            bits: 3.5,
            digit: false,
        },
    },
    Rule {
        name: "aws_secret_access_key",
        about: "AWS secret access key (40 base64) within 64 bytes after an access key id on the same line",
        keywords: &["AKIA", "ASIA"],
        regex: r"(?:AKIA|ASIA)[A-Z2-7]{16}[^\n]{0,64}?[^A-Za-z0-9/+=\\]((?:[A-Za-z0-9+]|\\?/){40})(?:[^A-Za-z0-9/+=\\]|\\[^/]|$)",
        group: 1,
        max_len: 192,
        left_boundary: false,
        quick: Quick::None,
        check: Check::Mixed {
            skip: 0,
            bits: 3.5,
            digit: false,
        },
    },
    Rule {
        name: "url_key_user",
        about: "user and password of a URL whose user part is itself a key (https://<key>:<key>@host)",
        keywords: &["://", r":\/\/"],
        // A raw `@` in the password: URL parsers end the user-info at the last `@`.
        regex: r#":(?://|\\/\\/)([^\s/?#@:"'<>\\\[\]{}|^`]{8,256}:[^\s/?#"'<>\\]{1,256})@"#,
        group: 1,
        max_len: 600,
        left_boundary: false,
        quick: Quick::UserInfo,
        check: Check::KeyUser,
    },
    Rule {
        name: "url_basic_auth",
        about: "password in a URL's user-info (scheme://user:password@host); scheme, user and host stay",
        keywords: &["://", r":\/\/"],
        // A raw `@` in the password: URL parsers end the user-info at the last `@`.
        regex: r#":(?://|\\/\\/)[^\s/?#@:"'<>\\\[\]{}|^`]{1,256}:([^\s/?#"'<>\\]{1,256})@"#,
        group: 1,
        max_len: 600,
        left_boundary: false,
        quick: Quick::UserInfo,
        check: Check::None,
    },
    Rule {
        name: "url_basic_auth",
        about: "password of a URL with no user (redis://:password@host)",
        keywords: &["://", r":\/\/"],
        // No `:` in the password: `cvs://:pserver:anoncvs@host` is a CVS root.
        regex: r#":(?://|\\/\\/):([^\s/?#:"'<>\\]{1,256})@"#,
        group: 1,
        max_len: 300,
        left_boundary: false,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "bearer_token",
        about: "the value after `Bearer` (Authorization headers, curl -H, logs)",
        keywords: &["Bea|rer ", "bea|rer ", "BEA|RER "],
        regex: r"(?i:bearer) +([A-Za-z0-9._~+/-]{16,}=*)",
        group: 1,
        max_len: 4096,
        left_boundary: false,
        quick: Quick::None,
        check: Check::Entropy { skip: 0, bits: 3.0 },
    },
    Rule {
        name: "authorization_header",
        about: "the credential of an Authorization header or field (Basic, token, Digest, bare)",
        keywords: &["Autho|rization", "autho|rization", "AUTHO|RIZATION"],
        regex: r#"(?i:authorization)\\?["']?\s*[:=]\s*\\?["']?(?:(?i:basic|token|bearer|digest|apikey|api-key|sso-key) +)?([A-Za-z0-9._~+/:-]{12,}=*)"#,
        group: 1,
        max_len: 4096,
        left_boundary: false,
        quick: Quick::None,
        check: Check::Entropy { skip: 0, bits: 3.0 },
    },
    Rule {
        name: "service_credential",
        about: "a value assigned to a name holding a service's name (ALGOLIA_API_KEY=…, \"sentry\": \"…\", datadog.token: …)",
        keywords: &[
            "a|dafruit",
            "A|dafruit",
            "ADAFRUIT",
            "a|dobe",
            "A|dobe",
            "ADOBE",
            "a|irtable",
            "A|irtable",
            "AIRTABLE",
            "a|lgolia",
            "A|lgolia",
            "ALGOLIA",
            "a|libaba",
            "A|libaba",
            "ALIBABA",
            "a|sana",
            "A|sana",
            "ASANA",
            "a|tlassian",
            "A|tlassian",
            "ATLASSIAN",
            "c|onfluence",
            "C|onfluence",
            "CONFLUENCE",
            "j|ira",
            "J|ira",
            "JIRA",
            "b|eamer",
            "B|eamer",
            "BEAMER",
            "b|itbucket",
            "B|itbucket",
            "BITBUCKET",
            "b|ittrex",
            "B|ittrex",
            "BITTREX",
            "m|eraki",
            "M|eraki",
            "MERAKI",
            "c|loudflare",
            "C|loudflare",
            "CLOUDFLARE",
            "c|odecov",
            "C|odecov",
            "CODECOV",
            "c|ohere",
            "C|ohere",
            "COHERE",
            "c|oinbase",
            "C|oinbase",
            "COINBASE",
            "c|onfluent",
            "C|onfluent",
            "CONFLUENT",
            "c|ontentful",
            "C|ontentful",
            "CONTENTFUL",
            "d|atadog",
            "D|atadog",
            "DATADOG",
            "d|iscord",
            "D|iscord",
            "DISCORD",
            "d|roneci",
            "D|roneci",
            "DRONECI",
            "d|ropbox",
            "D|ropbox",
            "DROPBOX",
            "e|tsy",
            "E|tsy",
            "ETSY",
            "f|acebook",
            "F|acebook",
            "FACEBOOK",
            "f|astly",
            "F|astly",
            "FASTLY",
            "f|inicity",
            "F|inicity",
            "FINICITY",
            "f|innhub",
            "F|innhub",
            "FINNHUB",
            "f|lickr",
            "F|lickr",
            "FLICKR",
            "f|reshbooks",
            "F|reshbooks",
            "FRESHBOOKS",
            "g|itter",
            "G|itter",
            "GITTER",
            "g|ocardless",
            "G|ocardless",
            "GOCARDLESS",
            "h|eroku",
            "H|eroku",
            "HEROKU",
            "h|ubspot",
            "H|ubspot",
            "HUBSPOT",
            "i|ntercom",
            "I|ntercom",
            "INTERCOM",
            "j|frog",
            "J|frog",
            "JFROG",
            "a|rtifactory",
            "A|rtifactory",
            "ARTIFACTORY",
            "b|intray",
            "B|intray",
            "BINTRAY",
            "k|raken",
            "K|raken",
            "KRAKEN",
            "k|ucoin",
            "K|ucoin",
            "KUCOIN",
            "l|aunchdarkly",
            "L|aunchdarkly",
            "LAUNCHDARKLY",
            "l|inear",
            "L|inear",
            "LINEAR",
            "l|inkedin",
            "L|inkedin",
            "LINKEDIN",
            "l|inked_in",
            "L|inked_in",
            "LINKED_IN",
            "l|ooker",
            "L|ooker",
            "LOOKER",
            "m|ailchimp",
            "M|ailchimp",
            "MAILCHIMP",
            "m|ailgun",
            "M|ailgun",
            "MAILGUN",
            "m|apbox",
            "M|apbox",
            "MAPBOX",
            "m|attermost",
            "M|attermost",
            "MATTERMOST",
            "m|essagebird",
            "M|essagebird",
            "MESSAGEBIRD",
            "m|essage_bird",
            "M|essage_bird",
            "MESSAGE_BIRD",
            "n|etlify",
            "N|etlify",
            "NETLIFY",
            "n|ewrelic",
            "N|ewrelic",
            "NEWRELIC",
            "n|ew_relic",
            "N|ew_relic",
            "NEW_RELIC",
            "n|ew-relic",
            "N|ew-relic",
            "NEW-RELIC",
            "n|ytimes",
            "N|ytimes",
            "NYTIMES",
            "o|kta",
            "O|kta",
            "OKTA",
            "p|laid",
            "P|laid",
            "PLAID",
            "p|rivateai",
            "P|rivateai",
            "PRIVATEAI",
            "p|rivate_ai",
            "P|rivate_ai",
            "PRIVATE_AI",
            "r|apidapi",
            "R|apidapi",
            "RAPIDAPI",
            "s|endbird",
            "S|endbird",
            "SENDBIRD",
            "s|entry",
            "S|entry",
            "SENTRY",
            "s|nyk",
            "S|nyk",
            "SNYK",
            "s|onar",
            "S|onar",
            "SONAR",
            "s|quarespace",
            "S|quarespace",
            "SQUARESPACE",
            "s|umo",
            "S|umo",
            "SUMO",
            "t|elegram",
            "T|elegram",
            "TELEGRAM",
            "t|ravis",
            "T|ravis",
            "TRAVIS",
            "t|witch",
            "T|witch",
            "TWITCH",
            "t|witter",
            "T|witter",
            "TWITTER",
            "t|ypeform",
            "T|ypeform",
            "TYPEFORM",
            "y|andex",
            "Y|andex",
            "YANDEX",
            "z|endesk",
            "Z|endesk",
            "ZENDESK",
            "l|ob_",
            "L|ob_",
            "LOB_",
            "BUNDLE_ENTERPRISE__",
            "BUNDLE_GEMS__",
            "co_api_key",
            "CO_API_KEY",
        ],
        // The name (service and the rest of the word, as in `ALGOLIA_ADMIN_KEY`),
        // quotes and blanks, an assignment (`=`, `:`, `:=`, `=>`, `>`, `,`, `||`,
        // `?=`), quotes, then the value.
        regex: r#"[\w.-]{3,60}?[ \t'"]{0,6}(?:[:=]{1,3}|=>|[>,]|\|\||\?=)[ \t'"`=]{0,6}([A-Za-z0-9_=.:+/%|-]{14,200})(?:[^A-Za-z0-9_=.:+/%|(\[-]|$)"#,
        group: 1,
        max_len: 300,
        left_boundary: false,
        quick: Quick::None,
        // Two digits: font and product names next to a service's name (`AdobeFont-1.0:
        // NimbusRomNo9L-Regu`) have one at most.
        check: Check::Value {
            bits: 2.5,
            letter: false,
            digits: 2,
            kind: Assigned::Service,
        },
    },
    Rule {
        name: "secret_assignment",
        about: "a high-entropy value assigned to a secret-ish name (api_key = …, \"token\": \"…\", PASSWORD=…)",
        keywords: SECRET_NAMES,
        // Only assignments (`=`, `:`, `:=`, `=>`, `?=`): a comma or `>` after a
        // secret-ish word is a list or prose far more often than a value. Up to three
        // words may stand between the name and a `:` (`Your API key is: …`, `Password
        // for admin: …`); a YAML block scalar (`key: |`, `>-`) puts the value on the
        // next line, indented.
        regex: r#"[\w.-]{3,40}?(?:[ \t'"]{0,6}(?:[:=]{1,3}|=>|\?=)|(?:[ \t][\w.-]{1,20}){1,3}?:)(?:[ \t'"`=]{0,6}|[ \t]{0,6}[|>][-+]?[ \t]{0,6}\r?\n[ \t]{1,40})([A-Za-z0-9_=.+/~-]{10,200})(?:[^A-Za-z0-9_=.+/~(\[-]|$)"#,
        group: 1,
        // The longest match (a `$` needs it under the window): name, three words, a
        // block scalar's indent and the value.
        max_len: 400,
        left_boundary: false,
        quick: Quick::None,
        check: Check::Value {
            bits: 3.5,
            letter: true,
            digits: 1,
            kind: Assigned::Secret,
        },
    },
    Rule {
        name: "secret_assignment",
        about: "the same, quoted: the whole value between the quotes goes, symbols and all",
        keywords: SECRET_NAMES,
        // A quoted value runs to its closing quote: `#`, `!`, `@`, `$`… inside a password
        // would otherwise end the unquoted form's value and leave the rest; JSON's `\/`
        // is part of it. A quoted name may also be followed by a comma: the name and the
        // value as two arguments (`setdefault("API_TOKEN", "…")`).
        regex: r#"[\w.-]{3,40}?(?:[ \t'"]{0,6}(?:[:=]{1,3}|=>|\?=)|["'],)[ \t]{0,6}["'`]((?:[^"'`\s\\]|\\/){10,200})["'`]"#,
        group: 1,
        max_len: 300,
        left_boundary: false,
        quick: Quick::None,
        check: Check::Value {
            bits: 3.5,
            letter: true,
            digits: 1,
            kind: Assigned::Secret,
        },
    },
];

/// Bytes a row of hits of one rule may read per byte it spans before further hits in it
/// go whole, unevaluated (see [`Effort`]).
pub(super) const ROW_BUDGET: usize = 16;

/// A row of a rule's hits, each starting inside what the hits before it read.
#[derive(Clone, Copy, Default)]
pub(super) struct Chain {
    /// Absolute input offset of the row's first hit.
    start: usize,
    /// Absolute input offset the row's walks (or unevaluated windows) reach.
    reach: usize,
    /// Bytes the row's walks read.
    read: usize,
}

impl Chain {
    /// Whether a hit at `at` joins the row.
    pub(super) fn holds(&self, at: usize) -> bool {
        at < self.reach
    }

    /// Whether the row has read more than its budget for the bytes it spans.
    pub(super) fn spent(&self) -> bool {
        self.read > ROW_BUDGET * (self.reach - self.start)
    }

    /// The row after a hit at `at` that read `read` bytes and reaches `reach`.
    pub(super) fn after(&self, at: usize, read: usize, reach: usize) -> Chain {
        if self.holds(at) {
            Chain {
                start: self.start,
                reach: self.reach.max(reach),
                read: self.read + read,
            }
        } else {
            Chain {
                start: at,
                reach,
                read,
            }
        }
    }
}

/// What bounds the work of rule evaluation: input made of one keyword repeated (`eyJ`
/// × 1 MiB) gives a hit every few bytes, and each would read its rule's whole window
/// again (16 KiB for `jwt`), so the work would grow with the window times the input.
/// Instead, per rule (and anchor pass), a hit that starts before the furthest byte the
/// hits before it read joins their *row*; while a row has read more than
/// [`ROW_BUDGET`] bytes per byte it spans, a hit joining it is *not* evaluated and its
/// whole window is redacted (fail closed: any span it could have found lies inside).
/// A rule's work is so at most about `ROW_BUDGET` bytes per input byte. Rows are a
/// function of the input alone (a hit reads up to where its DFA dies, or its window's
/// end), so streaming and whole-buffer scrubs still agree byte for byte. Ordinary text
/// reads each byte a few times at most (a rule reading a line for each `curl` on it).
#[derive(Default)]
pub(super) struct Effort {
    /// Per anchor pass and rule: `pass * RULES.len() + rule`.
    chains: Vec<Chain>,
    /// Rows changed by the hit being evaluated, with their values before it: restored
    /// when the hit cannot be decided yet (it is run again with more input).
    undo: Vec<(usize, Chain)>,
    /// Whether the hit being evaluated may go undecided (its window reaches past the
    /// bytes held): only then is `undo` kept. A hit evaluated on its whole window is
    /// always decided, and most hits are (a push per walk cost a clean scrub about 0.2
    /// instructions per byte, callgrind).
    undoable: bool,
    /// Bytes examined by rule evaluation (DFA walks, quick checks, capture searches,
    /// span checks): the work measure the tests bound per input byte.
    pub work: u64,
}

impl Effort {
    fn chain(&mut self, pass: usize, r: usize) -> (usize, Chain) {
        let i = pass * RULES.len() + r;
        if self.chains.len() <= i {
            self.chains.resize(i + 1, Chain::default());
        }
        (i, self.chains[i])
    }

    fn set(&mut self, i: usize, old: Chain, new: Chain) {
        if self.undoable {
            self.undo.push((i, old));
        }
        self.chains[i] = new;
    }

    fn roll_back(&mut self) {
        while let Some((i, old)) = self.undo.pop() {
            self.chains[i] = old;
        }
    }
}

/// A rule to run at a keyword: where the keyword starts (an index into the haystack),
/// and where the rule's walk may resume past it.
#[derive(Clone, Copy)]
struct Hit {
    at: usize,
    rule: usize,
    resume: Option<Resume>,
}

/// A span a rule wants redacted, in absolute input offsets.
pub(super) struct Found {
    pub start: usize,
    pub end: usize,
    pub rule: usize,
}

/// A keyword as compiled: its text, where its anchor sits in it, and its rules.
struct Keyword {
    text: Vec<u8>,
    /// The anchor starts this many bytes into the keyword.
    offset: usize,
    /// Rules to run where the keyword is found: its own and those of every keyword that
    /// is a prefix of it (the scan reports the longest anchor at a position).
    rules: Vec<usize>,
    /// Per rule of `rules`: its DFA's state after the keyword's bytes, which every hit
    /// starts with, so its walks skip them (see `matcher::Resume`).
    resume: Vec<Option<Resume>>,
    /// Bytes its rules need from the keyword's start: their largest window.
    window: usize,
}

/// The compiled table.
///
/// The passes search *anchors*, not keywords: a keyword written `Autho|rization` is
/// found through `rization`, 5 bytes in. The packed (Teddy) search fingerprints the first
/// bytes of each literal and slows down when those are common text (`aut`, `bea`,
/// `sec`); anchors start on rare ones, and case variants share one (`Bearer ` and
/// `bearer ` are both `rer `).
pub(super) struct Families {
    scan: AnchorScan,
    keywords: Vec<Keyword>,
    /// For each anchor: the keywords found through it (or through a prefix of it).
    anchor_keywords: Vec<Vec<usize>>,
    /// For each anchor: bytes needed from the anchor's start to decide all its keywords.
    anchor_reach: Vec<usize>,
    matchers: Vec<Matcher>,
    longest_anchor: usize,
    max_offset: usize,
}

impl Families {
    pub fn new() -> Self {
        Self::with_scan(ScanKind::Best)
    }

    pub fn with_scan(kind: ScanKind) -> Self {
        let mut written: Vec<&'static str> = Vec::new();
        for rule in RULES {
            for k in rule.keywords {
                if !written.contains(k) {
                    written.push(k);
                }
            }
        }
        let keywords: Vec<Keyword> = written
            .iter()
            .map(|w| {
                let offset = w.find('|').unwrap_or(0);
                let text = w.replace('|', "");
                let rules: Vec<usize> = (0..RULES.len())
                    .filter(|&r| {
                        RULES[r]
                            .keywords
                            .iter()
                            .any(|rk| text.starts_with(&rk.replace('|', "")))
                    })
                    .collect();
                let window = rules.iter().map(|&r| RULES[r].max_len).max().unwrap_or(0);
                Keyword {
                    text: text.into_bytes(),
                    offset,
                    rules,
                    resume: Vec::new(),
                    window,
                }
            })
            .collect();
        let mut anchors: Vec<&[u8]> = Vec::new();
        for k in &keywords {
            let a = &k.text[k.offset..];
            if !anchors.contains(&a) {
                anchors.push(a);
            }
        }
        let anchor_keywords: Vec<Vec<usize>> = anchors
            .iter()
            .map(|a| {
                (0..keywords.len())
                    .filter(|&k| a.starts_with(&keywords[k].text[keywords[k].offset..]))
                    .collect()
            })
            .collect();
        let anchor_reach = anchor_keywords
            .iter()
            .map(|ks| {
                ks.iter()
                    .map(|&k| keywords[k].window.saturating_sub(keywords[k].offset))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let matchers: Vec<Matcher> = RULES
            .iter()
            .map(|r| {
                assert!(
                    r.group <= MAX_GROUP,
                    "built-in rule {} redacts group {} (at most {MAX_GROUP})",
                    r.name,
                    r.group
                );
                r.matcher()
                    .unwrap_or_else(|e| panic!("built-in rule {} does not compile: {e}", r.name))
            })
            .collect();
        let scan = AnchorScan::new(&anchors, kind);
        let longest_anchor = anchors.iter().map(|a| a.len()).max().unwrap_or(1);
        let mut keywords = keywords;
        for k in &mut keywords {
            k.resume = k
                .rules
                .iter()
                .map(|&r| matchers[r].resume_after(&k.text))
                .collect();
        }
        Self {
            longest_anchor,
            max_offset: keywords.iter().map(|k| k.offset).max().unwrap_or(0),
            scan,
            keywords,
            anchor_keywords,
            anchor_reach,
            matchers,
        }
    }

    pub fn longest_anchor(&self) -> usize {
        self.longest_anchor
    }

    /// A keyword starts at most this many bytes before its anchor.
    pub fn max_offset(&self) -> usize {
        self.max_offset
    }

    #[cfg(test)]
    pub fn scan(&self) -> &AnchorScan {
        &self.scan
    }

    /// Passes over the input: the engine keeps a position in each.
    pub fn passes(&self) -> usize {
        self.scan.passes()
    }

    /// The first hit of `pass` starting at or after `from` (an index into `hay`):
    /// (start, anchor index).
    pub fn next_hit(&self, pass: usize, hay: &[u8], from: usize) -> Option<(usize, usize)> {
        self.scan.next_hit(pass, hay, from)
    }

    /// How many bytes from an anchor hit its rules need to see.
    pub fn reach(&self, anchor: usize) -> usize {
        self.anchor_reach[anchor]
    }

    /// Runs, at the anchor hit `at` (an index into `hay`, whose first byte sits at
    /// absolute offset `base`), the rules of every keyword found through it. `hay` must
    /// hold `max_offset() + 1` bytes before `at` (or start the input) and, unless
    /// `partial`, `reach(anchor)` bytes from `at` (or reach the end of input). With
    /// `partial` (the input goes on past `hay`), returns whether every rule could be
    /// decided on what `hay` holds; if not, the hit must be run again with more.
    #[expect(
        clippy::too_many_arguments,
        reason = "the hit, its place in the input and the engine's state"
    )]
    pub fn eval_hit(
        &self,
        hay: &[u8],
        base: usize,
        at: usize,
        anchor: usize,
        pass: usize,
        partial: bool,
        effort: &mut Effort,
        found: &mut Vec<Found>,
    ) -> bool {
        effort.undo.clear();
        effort.undoable = partial;
        let decided = self.eval_keywords(hay, base, at, anchor, pass, partial, effort, found);
        if !decided {
            effort.roll_back();
        }
        decided
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "the hit, its place in the input and the engine's state"
    )]
    fn eval_keywords(
        &self,
        hay: &[u8],
        base: usize,
        at: usize,
        anchor: usize,
        pass: usize,
        partial: bool,
        effort: &mut Effort,
        found: &mut Vec<Found>,
    ) -> bool {
        // A rule reached through two keywords at one start runs once. An anchor has a
        // few keywords, so 8 slots hold them; past that a rule may run twice, which
        // only costs time (equal spans merge).
        let mut ran: [(usize, usize); 8] = [(usize::MAX, usize::MAX); 8];
        let mut n_ran = 0;
        for &k in &self.anchor_keywords[anchor] {
            let kw = &self.keywords[k];
            let Some(p) = at.checked_sub(kw.offset) else {
                continue;
            };
            // The keyword's anchor is a prefix of the one found at `at`: only the bytes
            // before it are left to compare (none for most; a byte loop, as a `memcmp`
            // call costs more than these few bytes).
            if !hay[p..at].iter().eq(&kw.text[..kw.offset]) {
                continue;
            }
            for (&r, &resume) in kw.rules.iter().zip(&kw.resume) {
                if ran[..n_ran].contains(&(p, r)) {
                    continue;
                }
                if n_ran < ran.len() {
                    ran[n_ran] = (p, r);
                    n_ran += 1;
                }
                let hit = Hit {
                    at: p,
                    rule: r,
                    resume,
                };
                if !self.eval_rule(hay, base, hit, pass, partial, effort, found) {
                    return false;
                }
            }
        }
        true
    }

    /// Runs the rule of `hit` at its keyword. With `partial`, `hay` ends before the rule's window does
    /// (the input goes on): the rule is decided only if its DFA rules out every longer
    /// match within `hay`. Returns false if it is not decided (nothing is pushed).
    #[expect(
        clippy::too_many_arguments,
        reason = "the hit, its place in the input and the engine's state"
    )]
    fn eval_rule(
        &self,
        hay: &[u8],
        base: usize,
        hit: Hit,
        pass: usize,
        partial: bool,
        effort: &mut Effort,
        found: &mut Vec<Found>,
    ) -> bool {
        let Hit {
            at,
            rule: r,
            resume,
        } = hit;
        let rule = &RULES[r];
        if rule.left_boundary && !left_boundary(hay, at) {
            return true;
        }
        let partial = partial && hay.len() < at + rule.max_len;
        let window = &hay[at..hay.len().min(at + rule.max_len)];
        let start = base + at;
        let (slot, chain) = effort.chain(pass, r);
        if chain.holds(start) && chain.spent() {
            // Fail closed: the whole window, once it is whole (or the input ends).
            if partial {
                return false;
            }
            effort.work += 1;
            let end = start + window.len();
            effort.set(slot, chain, chain.after(start, 0, end));
            found.push(Found {
                start,
                end,
                rule: r,
            });
            return true;
        }
        // The quick check needs its bytes; on a partial window the DFA decides alone.
        if !partial && rule.quick == Quick::UserInfo {
            let (colon, read) = user_then_colon(window);
            effort.work += read as u64;
            if !colon {
                return true;
            }
        }
        // Most hits do not match: the match length says so, and only a match pays for
        // its capture groups.
        let (matched, walked) = if partial {
            let w = self.matchers[r].decided_in(window, resume);
            effort.work += w.walked as u64;
            match w.result {
                Some(m) => (m, w.walked),
                None => return false,
            }
        } else {
            let w = self.matchers[r].match_len(window, resume);
            effort.work += w.walked as u64;
            (w.result, w.walked)
        };
        effort.set(slot, chain, chain.after(start, walked, start + walked));
        let Some(len) = matched else {
            return true;
        };
        let span = if rule.group == 0 {
            Some(0..len)
        } else {
            // The check's digits are in the whole match, or no group of it passes.
            if !digits_for(rule.check, &window[..len]) {
                return true;
            }
            // The capture search reads the match's bytes (see `Matcher::group`).
            effort.work += walked as u64;
            self.matchers[r].group(window, len, rule.group)
        };
        let Some(span) = span else { return true };
        effort.work += span.len() as u64;
        if span.is_empty() || !passes(rule.check, hay, at, window, span.clone()) {
            return true;
        }
        found.push(Found {
            start: start + span.start,
            end: start + span.end,
            rule: r,
        });
        true
    }
}

/// Bytes that end a URL's user part (whitespace and the delimiters), as a table: this runs
/// for every byte after every `://` in the input.
static ENDS_USER: [bool; 256] = {
    let mut t = [false; 256];
    let stops = b" \t\n\x0c\r/?#@:\"'<>\\[]{}|^`";
    let mut i = 0;
    while i < stops.len() {
        t[stops[i] as usize] = true;
        i += 1;
    }
    t
};

/// `window` starts with `://` or `:\/\/`, then 1 to 256 bytes of a URL user part,
/// then `:` (the start of the url_basic_auth regex, without running it); and the bytes
/// it read.
fn user_then_colon(window: &[u8]) -> (bool, usize) {
    let skip = if window.starts_with(b"://") { 3 } else { 5 };
    let rest = window.get(skip..).unwrap_or_default();
    let stop = rest
        .iter()
        .take(257)
        .position(|&b| ENDS_USER[usize::from(b)]);
    let read = skip + stop.map_or(rest.len().min(257), |n| n + 1);
    (matches!(stop, Some(n) if n > 0 && rest[n] == b':'), read)
}

/// Whether `matched` holds as many ASCII digits as `check` asks of a span inside it (a
/// capture group of the match): when it does not, [`passes`] is false for every such
/// span, and the capture search is skipped. Most near misses of the assignment rules in
/// text (`"token": "Bearer"`, `password = getpass()`) have no digit.
fn digits_for(check: Check, matched: &[u8]) -> bool {
    let need = match check {
        // `assigned::plausible_value`: at least `digits` digits in the value.
        Check::Value { digits, .. } => digits,
        // A digit in the span past `skip`; a digit in the user part.
        Check::Mixed { digit: true, .. } | Check::KeyUser => 1,
        Check::Mixed { digit: false, .. } | Check::Entropy { .. } | Check::None => 0,
    };
    need == 0 || matched.iter().filter(|b| b.is_ascii_digit()).count() >= need
}

/// Whether `window[span]` (`window` starts at `hay[at]`) passes the rule's check.
fn passes(check: Check, hay: &[u8], at: usize, window: &[u8], span: Range<usize>) -> bool {
    let value = &window[span.clone()];
    match check {
        Check::Value {
            bits,
            letter,
            digits,
            kind,
        } => assigned::credential(hay, at, window, span, kind, (bits, letter, digits)),
        Check::KeyUser => {
            let user = value.split(|&b| b == b':').next().unwrap_or_default();
            user.len() >= 8 && user.iter().any(u8::is_ascii_digit) && entropy(user) >= 2.5
        }
        Check::None => true,
        Check::Entropy { skip, bits } => entropy(value.get(skip..).unwrap_or_default()) >= bits,
        Check::Mixed { skip, bits, digit } => {
            let s = value.get(skip..).unwrap_or_default();
            s.iter().any(u8::is_ascii_uppercase)
                && s.iter().any(u8::is_ascii_lowercase)
                && (!digit || s.iter().any(u8::is_ascii_digit))
                && entropy(s) >= bits
        }
    }
}

/// Shannon entropy in bits per byte.
pub(super) fn entropy(s: &[u8]) -> f64 {
    if s.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in s {
        counts[usize::from(b)] += 1;
    }
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

/// The distinct family names, in table order (for `--list-families`).
pub fn names() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for r in RULES {
        match out.iter_mut().find(|(n, _)| *n == r.name) {
            Some((_, abouts)) => abouts.push(r.about),
            None => out.push((r.name, vec![r.about])),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use regex::bytes::RegexBuilder;

    use super::*;

    #[test]
    fn the_user_part_table_is_whitespace_and_the_url_delimiters() {
        for b in 0..=255u8 {
            let want = b.is_ascii_whitespace() || b"/?#@:\"'<>\\[]{}|^`".contains(&b);
            assert_eq!(ENDS_USER[usize::from(b)], want, "byte {b:#04x}");
        }
    }

    #[test]
    fn the_user_info_quick_check_never_rejects_a_regex_match() {
        let r = RULES
            .iter()
            .position(|r| r.quick == Quick::UserInfo)
            .expect("url_basic_auth");
        let regex = RegexBuilder::new(&format!("^(?:{})", RULES[r].regex))
            .unicode(false)
            .build()
            .expect("regex");
        let parts: [&[u8]; 12] = [
            b"://",
            br":\/\/",
            b"u",
            b"user.name",
            b":",
            b"p@ss",
            b"@",
            b"/",
            b"\x0b",
            b"%3A",
            b"host:8080",
            b" ",
        ];
        // Every sequence of up to 4 more parts.
        let mut stack: Vec<(Vec<u8>, usize)> = vec![(b"://".to_vec(), 0), (br":\/\/".to_vec(), 0)];
        let (mut matched, mut rejected) = (0, 0);
        while let Some((s, depth)) = stack.pop() {
            let is_match = regex.is_match(&s);
            if is_match {
                matched += 1;
                assert!(user_then_colon(&s).0, "{}", String::from_utf8_lossy(&s));
            } else if !user_then_colon(&s).0 {
                rejected += 1;
            }
            if depth < 4 {
                for p in parts {
                    let mut next = s.clone();
                    next.extend_from_slice(p);
                    stack.push((next, depth + 1));
                }
            }
        }
        assert!(matched > 100 && rejected > 100, "{matched} {rejected}");
    }

    #[test]
    fn the_digit_screen_never_rejects_a_span_that_passes() {
        let tokens = include_str!("testdata/tokens.tsv");
        let planted: Vec<String> = tokens
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| l.split('\t').nth(1))
            .map(|t| t.replace("\\n", "\n"))
            .collect();
        let values = [
            "Bearer",
            "getpass()",
            "s3cr3tV4lue9Xq",
            "aB1",
            "x7Yq2Lm9Pz4Kw8",
            "9999",
        ];
        let mut inputs: Vec<String> = Vec::new();
        for t in &planted {
            inputs.push(format!("{t} "));
            for name in ["api_key", "PASSWORD", "token", "sentry_token", "s3_secret"] {
                inputs.push(format!("{name} = \"{t}\""));
            }
        }
        for v in values {
            for name in ["api_key", "PASSWORD", "token", "datadog.token", "a1_secret"] {
                inputs.push(format!("{name} = \"{v}\"\n"));
                inputs.push(format!("{name}: {v}\n"));
            }
            inputs.push(format!("https://user{v}:{v}@host/ Bearer {v} "));
        }
        let families = Families::new();
        let (mut passed, mut screened) = (0, 0);
        for input in &inputs {
            let hay = input.as_bytes();
            for at in 0..hay.len() {
                for (r, rule) in RULES.iter().enumerate() {
                    if rule.group == 0
                        || !rule
                            .keywords
                            .iter()
                            .any(|k| hay[at..].starts_with(k.replace('|', "").as_bytes()))
                    {
                        continue;
                    }
                    let window = &hay[at..hay.len().min(at + rule.max_len)];
                    let Some(len) = families.matchers[r].match_len(window, None).result else {
                        continue;
                    };
                    let Some(span) = families.matchers[r].group(window, len, rule.group) else {
                        continue;
                    };
                    let screen = digits_for(rule.check, &window[..len]);
                    if passes(rule.check, hay, at, window, span) {
                        passed += 1;
                        assert!(screen, "rule {} on {input:?}", rule.name);
                    } else if !screen {
                        screened += 1;
                    }
                }
            }
        }
        assert!(passed > 50 && screened > 20, "{passed} {screened}");
    }
}
