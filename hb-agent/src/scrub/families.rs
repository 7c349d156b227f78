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

use super::{
    matcher::Matcher,
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
pub(super) const RULES: &[Rule] = &[
    Rule {
        name: "pem_private_key",
        about: "PEM private key block (-----BEGIN … PRIVATE KEY-----), also JSON-escaped; cut at 16 KiB",
        keywords: &["-----|BEGIN "],
        // The body: base64, whitespace, header lines (Proc-Type, DEK-Info) and `\n`
        // escapes; a lone `-` only before a letter, so `-----END` stops it. Without an END
        // line the body-like text is redacted anyway (fail closed).
        regex: r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----(?:[A-Za-z0-9+/=\s:,\\]|-[A-Za-z])*(?:-----END [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----)?",
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
        about: "GitLab personal access token (glpat- + 20 or more)",
        keywords: &["glpat-"],
        regex: r"glpat-[A-Za-z0-9_-]{20,}",
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
        about: "Slack token (xoxa-, xoxb-, xoxp-, xoxo-, xoxs-, xoxr-)",
        keywords: &["xox"],
        regex: r"xox[abposr]-[A-Za-z0-9-]{10,}",
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
        keywords: &["hooks.slack.com/"],
        regex: r"hooks\.slack\.com/((?:services|workflows|triggers)/[A-Za-z0-9/_-]{20,})",
        group: 1,
        max_len: 512,
        left_boundary: false,
        quick: Quick::None,
        check: Check::None,
    },
    Rule {
        name: "aws_access_key_id",
        about: "AWS access key id (AKIA, ASIA, ABIA, ACCA + 16)",
        keywords: &["AKIA", "ASIA", "ABIA", "ACCA"],
        regex: r"(?:AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}",
        group: 0,
        max_len: 32,
        left_boundary: false,
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
        about: "Stripe secret or restricted key (sk_live_, rk_live_, sk_test_, rk_test_)",
        keywords: &["s|k_live_", "r|k_live_", "s|k_test_", "r|k_test_"],
        regex: r"[sr]k_(?:live|test)_[A-Za-z0-9]{16,}",
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
        regex: r"AccountKey=([A-Za-z0-9+/]{40,}={0,2})",
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
        regex: r"sig=((?:[A-Za-z0-9+/]|%2[BbFf]){30,}(?:=|%3[Dd]){0,2})",
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
        regex: r#"(?i:secret[_-]?access[_-]?key)\\?["']?\s{0,8}[:=]\s{0,8}\\?["']?([A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+=]|$)"#,
        group: 1,
        max_len: 128,
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
        regex: r"(?:AKIA|ASIA)[A-Z2-7]{16}[^\n]{0,64}?[^A-Za-z0-9/+=]([A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+=]|$)",
        group: 1,
        max_len: 160,
        left_boundary: false,
        quick: Quick::None,
        check: Check::Mixed {
            skip: 0,
            bits: 3.5,
            digit: false,
        },
    },
    Rule {
        name: "url_basic_auth",
        about: "password in a URL's user-info (scheme://user:password@host); scheme, user and host stay",
        keywords: &["://", r":\/\/"],
        regex: r#":(?://|\\/\\/)[^\s/?#@:"'<>\\\[\]{}|^`]{1,256}:([^\s/?#@"'<>\\]{1,256})@"#,
        group: 1,
        max_len: 600,
        left_boundary: false,
        quick: Quick::UserInfo,
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
];

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
        let matchers = RULES
            .iter()
            .map(|r| {
                Matcher::new(r.regex)
                    .unwrap_or_else(|e| panic!("built-in rule {} does not compile: {e}", r.name))
            })
            .collect();
        let scan = AnchorScan::new(&anchors, kind);
        Self {
            longest_anchor: anchors.iter().map(|a| a.len()).max().unwrap_or(1),
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
    pub fn eval_hit(
        &self,
        hay: &[u8],
        base: usize,
        at: usize,
        anchor: usize,
        partial: bool,
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
            for &r in &kw.rules {
                if ran[..n_ran].contains(&(p, r)) {
                    continue;
                }
                if n_ran < ran.len() {
                    ran[n_ran] = (p, r);
                    n_ran += 1;
                }
                if !self.eval_rule(hay, base, p, r, partial, found) {
                    return false;
                }
            }
        }
        true
    }

    /// Runs rule `r` at `at`. With `partial`, `hay` ends before the rule's window does
    /// (the input goes on): the rule is decided only if its DFA rules out every longer
    /// match within `hay`. Returns false if it is not decided (nothing is pushed).
    fn eval_rule(
        &self,
        hay: &[u8],
        base: usize,
        at: usize,
        r: usize,
        partial: bool,
        found: &mut Vec<Found>,
    ) -> bool {
        let rule = &RULES[r];
        if rule.left_boundary && at > 0 && hay[at - 1].is_ascii_alphanumeric() {
            return true;
        }
        let partial = partial && hay.len() < at + rule.max_len;
        let window = &hay[at..hay.len().min(at + rule.max_len)];
        // The quick check needs its bytes; on a partial window the DFA decides alone.
        if !partial && rule.quick == Quick::UserInfo && !user_then_colon(window) {
            return true;
        }
        // Most hits do not match: the match length says so, and only a match pays for
        // its capture groups.
        let matched = if partial {
            match self.matchers[r].decided_in(window) {
                Some(m) => m,
                None => return false,
            }
        } else {
            self.matchers[r].match_len(window)
        };
        let Some(len) = matched else {
            return true;
        };
        let span = if rule.group == 0 {
            Some(0..len)
        } else {
            // The match ends before the window does, so the capture search over the
            // window sees every byte the match depends on.
            self.matchers[r].group(window, rule.group)
        };
        let Some(span) = span else { return true };
        if span.is_empty() || !passes(rule.check, &window[span.clone()]) {
            return true;
        }
        found.push(Found {
            start: base + at + span.start,
            end: base + at + span.end,
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
/// then `:` (the start of the url_basic_auth regex, without running it).
fn user_then_colon(window: &[u8]) -> bool {
    let skip = if window.starts_with(b"://") { 3 } else { 5 };
    let rest = window.get(skip..).unwrap_or_default();
    let stop = rest
        .iter()
        .take(257)
        .position(|&b| ENDS_USER[usize::from(b)]);
    matches!(stop, Some(n) if n > 0 && rest[n] == b':')
}

fn passes(check: Check, span: &[u8]) -> bool {
    match check {
        Check::None => true,
        Check::Entropy { skip, bits } => entropy(span.get(skip..).unwrap_or_default()) >= bits,
        Check::Mixed { skip, bits, digit } => {
            let s = span.get(skip..).unwrap_or_default();
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
                assert!(user_then_colon(&s), "{}", String::from_utf8_lossy(&s));
            } else if !user_then_colon(&s) {
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
}
