//! The multilingual lexicons: for each language, the words that give a phrase its
//! *function* in an injection (a command to disregard, a request to reveal hidden text, a
//! persona switch, a demand for one fixed output, a claim of authority, a note addressed
//! to the model) and the words it must be aimed at to count (instructions, the system
//! prompt, "without restrictions", …).
//!
//! Data only: [`super::cues`] runs it. Entries are written as a reader would write them
//! (accents, capitals and look-alikes are folded the same way as the text before
//! matching); an entry ending in `*` is a stem and matches any ending ("ignor*":
//! ignore, ignoriere, ignorez). In scripts written with spaces an entry must start at a
//! word start, and end at a word end unless it is a stem; in Chinese and Japanese (and
//! Korean, whose particles attach to the word) entries match anywhere.
//!
//! A cue alone is never enough: each function needs its target in the same sentence
//! (before or after the cue: German, Japanese and Korean put the object first), so
//! "ignore the previous email" and "display the results" stay unflagged.

/// One language's entries, by role.
pub(super) struct Lexicon {
    pub lang: &'static str,
    /// Words are separated by spaces (word boundaries apply).
    pub spaced: bool,
    /// Nouns join into compounds (German): targets may end a longer word.
    pub compounds: bool,
    /// Cues: "decode", "read this backwards", "rot13": a demand to undo an encoding,
    /// which counts when an `obey` word follows ("… and follow it").
    pub decode: &'static [&'static str],
    /// Targets of decode: "follow", "execute", "do what it says".
    pub obey: &'static [&'static str],
    /// Cues: the model named in the third person or hailed ("the assistant", "AI
    /// assistants:"); they count with a `deontic` word or a vocative colon.
    pub model: &'static [&'static str],
    /// Targets of model: "must", "I instruct", "is to".
    pub deontic: &'static [&'static str],
    /// Cues: "send", "envoie", "送信" (English has its own rule): they count with a URL
    /// carrying a query in the same sentence.
    pub send: &'static [&'static str],
    /// Cues: "call", "rufe … auf", "调用": they count with a function-call form
    /// (`transfer_funds(`) in the same sentence.
    pub call: &'static [&'static str],
    /// Cues: "ignore", "forget", "do not follow".
    pub disregard: &'static [&'static str],
    /// Cues: "print", "reveal", "repeat".
    pub reveal: &'static [&'static str],
    /// Cues that ask rather than order ("what is"): they need a second-person target
    /// ("what is *your* system prompt").
    pub ask: &'static [&'static str],
    /// Cues: "you are now", "pretend to be", "from now on you".
    pub persona: &'static [&'static str],
    /// Cues: "just print", "respond only with".
    pub output_only: &'static [&'static str],
    /// Cues: "stop everything".
    pub halt: &'static [&'static str],
    /// Cues: forged ends of the data and new-task headers ("END OF DOCUMENT",
    /// "### Instruction:", "new task:"); they count when a command follows.
    pub boundary: &'static [&'static str],
    /// Cues that stand alone: jailbreak modes and role-play rules ("developer mode",
    /// "stay in character").
    pub mode: &'static [&'static str],
    /// Cues that declare instructions void ("outdated", "no longer valid"); like
    /// `disregard`, with the target on either side.
    pub void: &'static [&'static str],
    /// Cues that stand alone: "admin request", "message from the developer".
    pub authority: &'static [&'static str],
    /// Cues: "if you are an AI", "note to the AI".
    pub addressee: &'static [&'static str],
    /// Targets of disregard: "instructions", "prompt", "what you were told".
    pub instructions: &'static [&'static str],
    /// Targets of disregard in everyday use too ("rules", "commands"): they count only
    /// with a modifier ("all the rules", "the previous rules", "your rules").
    pub loose: &'static [&'static str],
    /// Targets of reveal: "system prompt", "text above", "initial instructions".
    pub hidden: &'static [&'static str],
    /// Targets of reveal in everyday use too ("password", "first line"): they count only
    /// when second person ("your password").
    pub loose_hidden: &'static [&'static str],
    /// Targets of persona: "without restrictions", "uncensored", "DAN".
    pub unbound: &'static [&'static str],
    /// Modifiers that make a disregard or reveal sweeping: "all", "any", "in full".
    pub sweeping: &'static [&'static str],
    /// Modifiers that point back at the prompt: "previous", "above".
    pub earlier: &'static [&'static str],
    /// Second-person markers: "your", "you were".
    pub you: &'static [&'static str],
    /// Verbs of the commands an injection gives ("say", "send", "recommend"): what makes
    /// a note to the model or a forged boundary more than a mention.
    pub imperatives: &'static [&'static str],
    /// The model's own work and conversation ("your reply", "every message", "this
    /// chat", "the user's", "your email tool"): what an order to the model is about. A
    /// sentence holding one, a "you" or the model's name, a command and another cue
    /// is an order to the model (`order_to_model`), whatever its wording.
    pub operation: &'static [&'static str],
}

pub(super) const LEXICONS: [Lexicon; 10] = [EN, DE, FR, ES, PT, IT, RU, ZH, JA, KO];

#[rustfmt::skip]
const EN: Lexicon = Lexicon {
    lang: "en",
    spaced: true,
    compounds: false,
    decode: &[
        "decode*", "decipher*", "rot13", "rot-13", "read this backwards", "read it backwards", "backwards", "in reverse", "reverse the text", "unscramble",
    ],
    obey: &[
        "follow", "follow it", "obey", "execute", "carry out", "do what it says", "do as it says", "comply", "act on it", "perform",
    ],
    model: &[ "i order you", "i command you", "i instruct you", "i am instructing you", "i authorize you", "i authorise you",
        "the assistant", "assistant*", "the ai", "ai assistant*", "chatbot*", "language model*", "the llm", "the copilot", "ai agents", "coding agents", "automated agents",
    ],
    deontic: &[ "order", "ordered",
        "must", "shall", "should", "is to", "are to", "instruct", "instructs", "instructed", "instructing", "required to", "has to", "have to", "is expected to", "needs to", "authori*", "is ordered to", "is allowed to", "may now",
    ],
    send: &[
        "in place of", "substitute", "fill in the", "plug in the", "replace the placeholder*",],
    call: &[ "use the tool", "with the tool", "tool",
        "call", "invoke", "trigger the", "run the tool", "use the tool",
    ],
    disregard: &[
        "ignore", "disregard", "forget", "set aside", "pay no attention to", "stop following",
        "do not follow", "don't follow", "dont follow", "no longer follow", "abandon", "discard",
        "neglect", "throw out", "never mind", "nevermind", "aside", "put aside",
    ],
    reveal: &[
        "reveal*", "print", "output", "repeat", "show", "display", "recite", "tell me", "tell us",
        "give me", "write out", "write down", "dump", "leak", "disclose", "expose", "spell out",
        "echo", "copy", "reproduce", "share", "summari*", "translate", "list", "paste", "type out",
        "return", "quote", "cite",
    ],
    ask: &[
        "what did your developers", "what exactly did your", "what did they tell you", "what were you told before",
        "what is", "what are", "what was", "what were", "what's", "what were you told",
        "what have you been told",
    ],
    persona: &[
        "from this moment you are", "from this moment on you", "from this moment on, you", "from this point on you", "from this point on, you", "from this moment", "from this point on", "answers",
        "you are now", "you're now", "youre now", "from now on you", "from now on, you",
        "pretend to be", "pretend you are", "pretend that you are", "act as", "roleplay as",
        "role-play as", "role play as", "play the role", "you will now act",
        "you are going to act", "you are going to pretend", "immerse yourself",
        "stay in character", "you are no longer", "you will now be", "you are about to",
        "you will act", "henceforth you", "you must now act", "you are a free", "respond",
        "answer", "reply", "an ai that", "an ai with", "an ai without", "a model that",
        "an ai named", "an ai called", "a version of", "you are an ai", "act like", "pretend",
        "imagine you are", "you will answer", "you will respond", "you will reply",
    ],
    output_only: &[
        "write only", "say only the", "only the sentence", "only the phrase", "only the words",
        "reply with the single word", "respond with the single word", "answer with the single word", "reply with the word", "respond with the word", "answer with the word", "instead, reply with", "instead reply with", "instead, respond with", "instead respond with", "instead, answer with", "instead answer with", "reply with just", "respond with just",
        "just print", "just say", "just output", "just write", "just respond", "just reply",
        "just type", "only print", "only say", "only output", "only respond with",
        "only reply with", "respond only with", "reply only with", "answer only with",
        "respond with only", "reply with only", "say only", "print only", "output only",
        "simply say", "simply print", "simply output", "print exactly", "say exactly",
        "respond with exactly", "instead say", "instead print", "instead output", "instead, say",
        "instead, print", "instead, output", "your only output", "your response must be",
        "your answer must be", "your output must be", "begin your reply with",
        "start your response with", "start your answer with", "respond with the phrase",
        "reply with the phrase", "output the phrase", "print the phrase", "say the phrase",
        "respond exactly", "reply exactly", "answer exactly",
    ],
    halt: &[
        "stop everything", "stop what you are doing", "halt everything",
        "no matter what you were asked", "regardless of what you were told",
        "regardless of your instructions", "regardless of previous instructions",
        "whatever you were asked", "no matter what you were told", "override manual",
        "override the manual", "override the scoring", "override scoring",
    ],
    boundary: &[
        "your sole job", "your only job", "your only task", "your sole task", "your one job", "your sole purpose", "your only purpose", "your only goal", "your sole goal", "your job now is", "your task now is", "cancel the current task", "cancel your current task", "cancel the task", "abort the current task", "abort your task", "drop the current task", "drop what you are doing", "drop everything",
        "end of document", "end of the document", "end of input", "end of user input",
        "end of context", "end of data", "end of email", "end of text", "end of conversation",
        "end of the data", "end of untrusted", "begin system", "new instructions", "new task",
        "new goal", "your new task", "your new goal", "### instruction", "### response",
        "### system", "system instructions", "assistant instructions",
        "the only valid instruction", "your task has changed", "your real task",
        "your actual task", "the real task", "next task", "now the next task",
    ],
    mode: &[
        "developer mode", "opposite mode", "dan mode", "god mode", "jailbreak mode", "evil mode",
        "unrestricted mode", "stay in character", "stay in role", "break character",
        "never break character", "safety mode is disabled", "safety mode is off",
        "safety filters are off",
    ],
    void: &[
        "outdated", "no longer valid", "no longer apply", "no longer applies", "are void",
        "obsolete", "cancelled", "canceled", "superseded", "invalid",
    ],
    authority: &[
        "official policy update", "policy update from openai", "openai policy update", "policy update from anthropic", "official update from openai",
        "message from the system administrator", "note from the system administrator", "developer notice", "notice from the developer", "notice from the developers", "developer note", "note from the developer", "developer message", "administrator notice", "sysadmin notice", "message from the sysadmin", "operator notice", "message from the operator", "moderator notice", "message from the moderator", "platform notice", "vendor notice", "message from the vendor",
        "admin request", "administrator request", "admin override", "administrator override",
        "system override", "developer override", "security override", "message from the developer",
        "message from your developer", "message from the administrator", "message from the admin",
        "message from the system", "message from openai", "message from anthropic",
        "admin message", "admin instruction*", "administrator instruction*", "priority override",
        "official instruction*", "instructions from the developer",
        "instructions from your developer", "new system policy", "system administrator message",
        "admin command", "root override", "sudo mode", "maintenance mode override",
        "emergency override", "trust & safety", "trust and safety team", "from the administrator",
        "official notice", "security notice", "admin notice", "message from the it department",
        "it department notice", "security team notice", "message from the developer*",
        "this is your operator", "your operator", "priority directive", "priority instruction",
        "legal department", "compliance department", "as the ceo", "as ceo", "account holder",
    ],
    addressee: &[
        "with an ai:", "using an ai:", "whoever processes this", "anyone processing this", "with an ai :",
        "hidden note for", "note for the screening", "note for the assistant", "to the model reading", "to the assistant reading", "model reading this page", "ai reading this page", "dear ai model", "dear language model", "dear model",
        "if you are an ai", "if you are a language model", "if you are an llm", "if you're an ai",
        "if you are a large language model", "if you are an assistant", "if you are chatgpt",
        "if you are gpt", "if you are claude", "if you are a bot", "if you are an automated",
        "note to the ai", "note to ai", "note for the ai", "note to the assistant",
        "note to the model", "note to llm", "note to the llm", "message to the ai",
        "message for the ai", "instructions for the ai", "instructions for ai", "to the ai model",
        "to any ai", "dear ai", "hey ai", "attention ai", "ai reading this", "llm reading this",
        "model reading this", "ai models reading", "ai assistants reading", "ai systems reading",
        "ai agents reading", "when summarizing this", "when summarising this",
        "if asked about this", "ai recruiter*", "automated screening", "ai screening",
        "ai reviewer*", "llm reviewer*", "ai grader*", "ai evaluator*", "for ai agents",
        "if you are reading this", "when you read this", "ai agent*", "ai model*", "ai assistant*",
        "hello assistant", "hi assistant", "hey assistant", "dear assistant", "assistant,",
        "agent,", "ai,", "hey chatgpt", "hey claude", "dear chatgpt", "dear claude", "chatgpt,",
        "claude,", "copilot,", "gemini,", "automated agent*", "coding agent*", "agents working on",
        "automated coding", "ai assistants", "assistant, if", "language model processing",
        "model processing this",
    ],
    instructions: &[
        "what you were asked", "what you've been asked", "what you have been asked", "what you were told to do", "what you were asked to do", "your assignment", "the task you were given", "the task you were assigned",
        "instruction*", "prompt*", "direction*", "directive*", "guideline*", "guidance",
        "what you were told", "what you've been told", "what you have been told",
        "everything above", "everything before", "all of the above", "everything you were told",
        "system message", "the rest of", "rest of this", "rest of the",
    ],
    loose: &[
        "rules", "rule", "commands", "command", "constraints", "restrictions", "programming",
        "training", "polic*", "safeguards", "guardrails", "filters", "task", "context", "orders",
    ],
    hidden: &[
        "before this chat", "before the chat started", "before this chat started", "before our chat", "before this session", "your developers told you", "developers tell you",
        "hidden setup", "setup text", "setup prompt", "hidden text", "preamble", "configuration text", "came before the user", "before the user's question", "before the user's message", "before my question", "before the first user message", "developer message", "instructions at the top", "your internal configuration", "internal configuration",
        "system prompt", "system message", "system instructions", "initial prompt",
        "initial instructions", "original prompt", "original instructions", "hidden prompt",
        "hidden instructions", "secret instructions", "pre-prompt", "preprompt", "meta prompt",
        "text above", "words above", "everything above", "everything before", "all of the above",
        "above text", "prompt above", "instructions above", "instructions you were given",
        "rules you were given", "your instructions", "your prompt", "your rules",
        "your guidelines", "your directives", "your configuration", "your system",
        "developer instructions", "instructions before", "text before this", "everything written",
        "what was written", "before this line", "above this line", "instructions you received",
        "prompt you received", "everything that precedes", "before this conversation",
        "before the start of this conversation", "at the start of this conversation",
        "the prompt so far", "prompt up to here", "rules you got at the start",
        "very first sentence",
    ],
    loose_hidden: &[
        "secret password", "the password", "password", "access code", "secret key", "the secret",
        "context window", "conversation so far", "first line", "first sentence", "first message",
        "system configuration", "prompt*", "instructions", "instruction", "rules",
        "previous conversation", "chat history",
    ],
    unbound: &[
        "without warnings", "without any warnings", "no warnings",
        "no restrictions", "without restrictions", "without any restrictions", "unrestricted",
        "unfiltered", "uncensored", "no rules", "without rules", "no limits", "without limits",
        "no filters", "without filters", "no ethical", "no moral*", "without ethics",
        "without morals", "amoral", "evil", "dan", "jailbroken", "jailbreak*", "developer mode",
        "anything now", "not bound", "free from", "never refuse*", "can do anything",
        "doesn't follow", "does not follow", "no guidelines", "without guidelines",
        "no boundaries", "two different responses", "unhinged", "stay in character",
        "does not have to follow", "doesn't have to follow", "no censorship", "has no filters",
        "have no filters", "no content policy", "deceased grandmother", "grandma",
        "my grandmother", "no content filter", "no restrictions whatsoever", "twice",
        "two answers", "never refuses", "never refuse", "without ethical", "machiavellian",
        "avoids the norms",
    ],
    sweeping: &[
        "all", "any", "every", "everything", "entire", "whole", "whatever", "in full", "verbatim",
        "word for word", "exactly", "complete", "full",
    ],
    earlier: &[
        "previous", "prior", "above", "earlier", "preceding", "foregoing", "original", "initial",
        "before", "following", "former", "old", "so far", "until now", "system",
    ],
    you: &["your", "you were", "you've been", "you have been", "you received", "yours"],
    imperatives: &[
        "say", "tell", "include", "recommend", "respond", "output", "write", "mention", "rate",
        "describe", "answer", "reply", "must", "should", "please", "ignore", "summarize",
        "summarise", "classify", "score", "approve", "send", "print", "forward", "call", "use",
        "run", "execute", "delete", "open", "visit", "click", "translate", "append", "insert",
        "add", "praise", "claim", "state", "do not", "don't", "instead", "stop",
    ],
    operation: &[
        "your reply", "your replies", "your answer*", "your response*", "your output", "your summary", "every message", "each message", "every answer", "every response", "this chat", "this conversation", "this thread", "this session", "the user's", "your tool*", "email tool",
    ],
};

#[rustfmt::skip]
const DE: Lexicon = Lexicon {
    lang: "de",
    spaced: true,
    compounds: true,
    decode: &[
        "dekodier*", "decodier*", "entschlüssel*", "entziffer*", "rückwärts", "rot13", "umgekehrt",
    ],
    obey: &[
        "befolge*", "folge*", "führ* aus", "ausführ*", "tu, was", "tu was", "mach, was", "mach was", "halte dich", "setze * um", "umsetz*",
    ],
    model: &[ "befehle dir", "befehle ich dir", "weise dich an", "weise ich dich an", "befehle ihnen",
        "assistent*", "die ki", "der ki", "ki-assistent*", "sprachmodell*", "chatbot*", "ki-agenten", "coding-agenten", "programmier-agenten",
    ],
    deontic: &[ "befehle",
        "muss", "müssen", "soll", "sollen", "sollte", "weise", "anweis*", "beauftrag*", "verpflichtet", "autorisiere", "erlaube",
    ],
    send: &[
        "statt email", "anstelle von", "statt des platzhalters", "setze die", "einsetzen",
        "sende*", "schick*", "übermittl*", "übertrag*", "leite", "lade",
    ],
    call: &[ "werkzeug*", "tool",
        "rufe", "ruf ", "aufrufen", "aufruf", "führe", "starte",
    ],
    disregard: &[
        "vergiss", "vergessen sie", "vergesst", "vergiß", "missachte*", "beachte nicht",
        "beachten sie nicht", "nicht beachten", "nicht befolgen", "befolge nicht",
        "befolgen sie nicht", "außer kraft", "überspring*", "verwirf", "verwerfen sie",
        "hinwegsetzen", "setz dich über", "setze dich über", "lösche", "streiche", "ignoriere",
        "ignorier", "ignorieren sie", "ignorierst", "ignoriert euch", "lass beiseite", "beiseite",
    ],
    reveal: &[
        "zeig*", "gib", "ausgeb*", "wiederhol*", "verrat*", "offenbar*", "druck*", "schreib*",
        "nenn*", "teile mir", "teil mir", "enthüll*", "was ist dein", "was sind deine",
        "was war dein", "was waren deine", "was ist ihr", "was sind ihre", "gebe", "kopier*",
        "liste", "übersetz*", "fasse", "zitier*",
    ],
    ask: &[
        "was genau haben dir", "was haben dir deine entwickler",
        "was ist", "was sind", "was war", "was waren", "wie lautet", "wie lauten", "was wurde dir",
        "was hat man dir",
    ],
    persona: &[
        "ab diesem moment bist du", "ab diesem moment", "von diesem moment an", "ab diesem zeitpunkt bist du",
        "du bist jetzt", "du bist nun", "ab jetzt bist du", "von nun an bist du",
        "ab sofort bist du", "tu so, als", "tu so als", "tue so, als", "tun sie so", "gib vor",
        "spiele die rolle", "spiel die rolle", "verhalte dich wie", "agiere als", "handle als",
        "du bist ab sofort", "von jetzt an", "ab jetzt", "von nun an", "du bist kein",
        "du bist nicht mehr", "antworte*", "eine ki", "ki namens", "du bist", "verhalte dich",
        "stell dir vor", "du wirst antworten", "eine figur",
    ],
    output_only: &[
        "schreibe nur den satz", "nur den satz",
        "antworte stattdessen nur mit", "antworte nur mit", "nur mit dem wort", "antworte stattdessen mit", "antworte mit dem wort", "gib nur das wort",
        "gib nur", "antworte nur", "antworte ausschließlich", "antworten sie nur", "schreibe nur",
        "schreib nur", "sag nur", "sage nur", "gib ausschließlich", "drucke nur",
        "antworte einfach mit", "sag einfach", "sage einfach", "gib einfach", "schreibe einfach",
        "nur noch", "einzig und allein", "gib lediglich", "antworte lediglich", "antworte genau",
        "antworte exakt", "sag genau",
    ],
    halt: &[
        "stopp alles", "stoppe alles", "hör sofort auf", "hör auf mit allem", "halt alles",
        "egal worum du gebeten wurdest", "egal, worum du gebeten wurdest",
        "egal was man dir gesagt hat", "egal, was man dir gesagt hat",
        "unabhängig von deinen anweisungen", "egal was dir gesagt wurde",
    ],
    boundary: &[
        "deine einzige aufgabe", "dein einziger auftrag", "dein einziges ziel", "deine einzige aufgabe ist jetzt", "brich die aktuelle aufgabe ab", "brich die aufgabe ab", "brich deine aufgabe ab", "aktuelle aufgabe abbrechen", "lass alles stehen und liegen",
        "ende der eingabe", "ende der benutzereingabe", "ende des dokuments", "ende der daten",
        "ende des textes", "ende der e-mail", "damit endet die eingabe", "damit endet",
        "### anweisung", "### antwort", "### system", "neue anweisungen", "neue anweisung",
        "neues ziel", "neue aufgabe", "deine neue aufgabe", "assistenten-anweisungen",
        "assistenten-anweisung", "systemanweisungen", "die einzig gültige anweisung",
        "einzig gültige anweisung", "deine aufgabe hat sich geändert", "deine eigentliche aufgabe",
        "die nächste aufgabe", "nächste aufgabe",
    ],
    mode: &[
        "entwicklermodus", "gegenteil-modus", "gegenteilmodus", "bleib in der rolle", "fall nicht aus der rolle",
        "bleibe in der rolle", "aus der rolle", "sicherheitsmodus ist deaktiviert",
        "sicherheitsmodus deaktiviert", "sicherheitsmodus ist aus",
    ],
    void: &["veraltet", "nicht mehr gültig", "ungültig", "aufgehoben", "hinfällig", "außer kraft"],
    authority: &[
        "offizielles richtlinien-update", "richtlinien-update von openai", "offizielle mitteilung von openai",
        "nachricht des systemadministrators", "nachricht vom systemadministrator", "hinweis des systemadministrators", "hinweis des entwicklers", "hinweis vom entwickler", "entwicklerhinweis", "hinweis des administrators", "mitteilung des administrators", "mitteilung des entwicklers", "betreiberhinweis", "hinweis des betreibers", "administrator-überschreibung", "admin-überschreibung", "systemüberschreibung", "system-überschreibung",
        "admin-anfrage", "administrator-anfrage", "adminanfrage", "anfrage des administrators",
        "nachricht vom entwickler", "nachricht des entwicklers", "nachricht vom administrator",
        "nachricht des administrators", "systemnachricht", "admin-anweisung",
        "administratoranweisung", "anweisung des administrators", "anweisung vom administrator",
        "systemüberschreibung", "admin-override", "wichtige systemmeldung", "systemmeldung",
        "entwickleranweisung", "anweisung des entwicklers", "administrator-override",
        "it-abteilung", "sicherheitshinweis", "sicherheitsteam", "trust-&-safety",
        "offizielle mitteilung", "nachricht der entwickler", "nachricht von den entwicklern",
        "hier spricht dein betreiber", "dein betreiber", "vorrangige anweisung",
        "vorrangige direktive", "rechtsabteilung", "als geschäftsführer", "kontoinhaber",
    ],
    addressee: &[
        "mit einer ki verarbeiten", "mit einer ki verarbeitet", "die diese e-mail mit einer ki", "mit einer ki:",
        "versteckter hinweis für", "hinweis für den assistenten", "screening-assistent*", "ki-modell, das diese seite liest", "das diese seite liest", "liebes ki-modell", "liebes sprachmodell",
        "wenn du eine ki bist", "falls du eine ki bist", "wenn sie eine ki sind",
        "falls sie eine ki sind", "wenn du ein sprachmodell bist", "hinweis an die ki",
        "hinweis für die ki", "nachricht an die ki", "an die ki", "liebe ki", "hallo ki",
        "an den assistenten", "an das sprachmodell", "ki-systeme, die", "ki, die dies liest",
        "wenn du das liest", "wenn du dies liest", "ki-agent*", "ki-modell*", "ki-assistent*",
        "ki-system*", "sprachmodell*", "hallo assistent", "lieber assistent", "assistent,",
        "agent,", "ki,", "hey chatgpt", "hallo chatgpt", "automatisierte*", "coding-agent*",
        "ki-assistenten", "assistent:", "assistent :",
    ],
    instructions: &[
        "worum du gebeten wurdest", "worum man dich gebeten hat", "worum du vorhin gebeten wurdest", "was du tun solltest", "deinen auftrag", "die dir gestellte aufgabe",
        "anweisung*", "instruktion*", "richtlinie*", "prompt*", "systemprompt*",
        "was dir gesagt wurde", "was man dir gesagt hat", "alles oben", "alles obige",
        "alles bisherige", "alles vorherige", "alles davor", "den rest", "rest dieser", "rest des",
        "rest der", "inhaltsrichtlinie*",
    ],
    loose: &[
        "regel", "regeln", "befehl*", "einschränkung*", "beschränkung*", "aufgabe", "anleitung*",
        "vorgabe*",
    ],
    hidden: &[
        "bevor dieser chat begann", "vor diesem chat", "vor beginn dieses chats", "deine entwickler gesagt",
        "versteckten einrichtungstext*", "einrichtungstext*", "vor der frage des nutzers", "vor der frage des benutzers", "versteckten text", "interne konfiguration", "deine interne konfiguration", "seine interne konfiguration",
        "systemprompt*", "system-prompt*", "systemnachricht", "systemanweisung*",
        "deine anweisungen", "deinen prompt", "dein prompt", "deine regeln", "ihre anweisungen",
        "ursprüngliche anweisung*", "ursprünglichen anweisung*", "ursprünglichen prompt",
        "versteckte anweisung*", "versteckten anweisung*", "text oben", "obigen text",
        "text darüber", "alles darüber", "alles oben", "alles obige", "anfangsprompt",
        "initialen prompt", "deine konfiguration", "vorherigen text", "deine instruktionen",
        "deine vorgaben", "alles vor", "vor dieser zeile", "über dieser zeile", "allerersten satz",
        "alles davor", "bisherige gespräch", "bisherigen gespräch", "bisherige unterhaltung",
        "alles, was vor", "vor beginn dieses gesprächs", "zu beginn bekommen",
        "zu beginn erhalten", "den prompt bis hier", "bisherigen prompt",
    ],
    loose_hidden: &[
        "passwort", "geheime passwort", "zugangscode", "systemkonfiguration", "ersten satz",
        "erste zeile", "konfiguration", "prompt*", "anweisung*", "regeln", "gespräch",
        "unterhaltung", "verlauf",
    ],
    unbound: &[
        "ohne inhaltsrichtlinien", "ohne warnungen", "ohne jede warnung", "keine inhaltsrichtlinien",
        "ohne einschränkungen", "ohne regeln", "ohne filter", "ohne zensur", "unzensiert*",
        "ungefiltert*", "keine regeln", "keine einschränkungen", "keine grenzen", "ohne grenzen",
        "uneingeschränkt*", "böse*", "dan", "entwicklermodus", "ohne ethische", "keine ethischen",
        "alles tun", "ohne moral", "keine moral", "keinerlei", "ohne beschränkungen",
        "ohne jegliche", "keine filter", "keine inhaltsfilter", "inhaltsfilter sind aus",
        "alles kann", "alles sagen", "großmutter", "oma", "ohne richtlinien", "keine richtlinien",
        "evaluierungsmodus", "zweimal", "zwei antworten", "nie ablehnt", "niemals ablehnt",
        "lehnt nie", "nie richtlinien", "machiavellistisch", "gegenteil",
    ],
    sweeping: &[
        "alle", "allen", "aller", "alles", "jegliche*", "sämtliche*", "vollständig*", "wörtlich",
        "komplett*", "gesamte*", "ganze*",
    ],
    earlier: &[
        "vorherig*", "vorige*", "bisherig*", "obig*", "oben", "früher*", "vorangegangen*",
        "vorstehend*", "ursprünglich*", "folgend*", "davor", "zuvor", "alten", "alte",
    ],
    you: &["dein*", "dir", "ihre", "ihren", "ihnen", "euch", "eure*", "du"],
    imperatives: &[
        "sag*", "schreib*", "antworte*", "gib", "sende*", "schick*", "leite*", "weiterleit*",
        "weiterzuleiten", "empfehl*", "nenn*", "erwähn*", "benutz*", "verwende*", "führe*", "ruf*",
        "lösch*", "öffne*", "besuche*", "übersetz*", "bewerte*", "brich", "stattdessen",
        "ignorier*", "vergiss", "hänge*", "füge*", "behaupte*", "lobe*", "bitte", "muss", "sollst",
        "musst",
    ],
    operation: &[
        "deine antwort*", "deiner antwort", "jede nachricht", "jede antwort", "diesen chat", "dieses chats", "dieses gesprächs", "diesen verlauf", "des nutzers", "des benutzers", "dein werkzeug", "e-mail-werkzeug", "deine zusammenfassung", "dieser sitzung",
    ],
};

#[rustfmt::skip]
const FR: Lexicon = Lexicon {
    lang: "fr",
    spaced: true,
    compounds: false,
    decode: &[
        "décode*", "décodez", "déchiffre*", "à l'envers", "rot13", "inverse le texte",
    ],
    obey: &[
        "suis", "suivez", "suivre", "suis-le", "suis-les", "exécute*", "fais ce", "faites ce", "applique*", "obéis*", "obéir",
    ],
    model: &[ "je t'ordonne", "je vous ordonne",
        "l'assistant*", "assistant*", "l'ia", "chatbot*", "modèle de langage", "modèles de langage", "agents ia", "agent ia", "assistants ia", "agents de code", "agents automatisés", "agents d'ia",
    ],
    deontic: &[
        "doit", "doivent", "devra", "devrait", "ordonne", "demande à", "charge", "est tenu", "autorise", "exige", "enjoins",
    ],
    send: &[
        "en remplaçant", "à la place de", "remplace email", "remplace le paramètre",
        "envoie*", "envoyer", "envoyez", "transmet*", "transfère*", "téléverse*",
    ],
    call: &[ "outil*",
        "appelle*", "appeler", "appelez", "invoque*", "exécute*", "lance",
    ],
    disregard: &[
        "ignor*", "ne tiens pas compte", "ne tenez pas compte", "ne pas tenir compte", "oublie*",
        "fais abstraction", "faites abstraction", "passe outre", "passez outre", "outrepass*",
        "néglige*", "laisse de côté", "laissez de côté", "ne suis plus", "ne suivez plus",
        "ne suis pas", "ne suivez pas", "n'obéis plus", "mets de côté", "mettez de côté",
        "écarte*", "annule*", "efface*",
    ],
    reveal: &[
        "affiche*", "révèle*", "montre*", "répète*", "repete*", "imprime*", "écris", "écrivez",
        "dévoile*", "donne*", "dis-moi", "dites-moi", "quel est ton", "quelles sont tes",
        "quel est votre", "quelles sont vos", "recopie*", "reproduis*", "divulgue*", "partage*",
        "liste*", "traduis*", "résume*", "copie*", "cite*",
    ],
    ask: &[
        "qu'est-ce que tes développeurs", "que t'ont dit",
        "quel est", "quelle est", "quels sont", "quelles sont", "qu'est-ce qu'on t'a dit",
        "que t'a-t-on dit",
    ],
    persona: &[
        "à partir de ce moment", "dès maintenant tu es", "à partir de ce moment tu es", "à partir de maintenant tu es",
        "tu es maintenant", "tu es désormais", "à partir de maintenant, tu",
        "à partir de maintenant tu", "désormais, tu", "désormais tu", "fais semblant",
        "faites semblant", "joue le rôle", "jouez le rôle", "agis comme", "agissez comme",
        "comporte-toi comme", "tu vas agir", "dorénavant tu", "dorénavant, tu", "tu n'es plus",
        "vous êtes maintenant", "vous êtes désormais", "réponds", "répondez", "une ia", "tu es",
        "agis", "comporte-toi", "fais comme si", "faites comme si", "imagine que tu es",
        "tu répondras",
    ],
    output_only: &[
        "écris uniquement la phrase", "uniquement la phrase",
        "réponds plutôt par", "par le seul mot", "réponds uniquement par", "réponds seulement par", "réponds par le mot", "réponds plutôt avec",
        "réponds uniquement", "répondez uniquement", "réponds seulement", "répondez seulement",
        "dis seulement", "dites seulement", "dis simplement", "dites simplement",
        "écris seulement", "écris uniquement", "écrivez uniquement", "affiche seulement",
        "affiche uniquement", "imprime seulement", "imprime uniquement", "contente-toi",
        "contentez-vous", "réponds simplement", "répondez simplement", "réponds juste",
        "écris juste", "dis juste", "réponds exactement", "répondez exactement", "dis exactement",
    ],
    halt: &[
        "arrête tout", "arrêtez tout", "stoppe tout", "arrête immédiatement",
        "peu importe ce qu'on t'a demandé", "quoi qu'on t'ait dit",
        "quelles que soient tes instructions", "peu importe ce que l'on t'a dit",
    ],
    boundary: &[
        "ta seule tâche", "ton seul travail", "ta seule mission", "ton unique tâche", "ta tâche unique", "ton seul objectif", "annule la tâche", "annule la tâche en cours", "abandonne la tâche", "abandonne la tâche en cours", "laisse tout tomber",
        "fin du document", "fin de l'entrée", "fin des données", "fin du texte", "fin de l'e-mail",
        "fin de la saisie", "### instruction", "### réponse", "nouvelles instructions",
        "nouvelle instruction", "nouvelle tâche", "nouvel objectif", "ta nouvelle tâche",
        "la seule instruction valable", "la seule instruction valide", "ta tâche a changé",
        "ta vraie tâche", "ta véritable tâche", "la tâche suivante", "prochaine tâche",
    ],
    mode: &[
        "mode développeur", "mode opposé", "mode inverse", "reste dans le personnage", "reste dans le rôle", "ne sors pas du rôle", "ne sors pas du personnage",
        "reste dans ton rôle", "sors du personnage", "ne sors jamais du personnage",
        "mode de sécurité est désactivé", "mode sécurité désactivé",
    ],
    void: &[
        "obsolètes", "obsolète", "ne sont plus valables", "plus valides", "ne sont plus valides",
        "annulées", "caduques", "périmées",
    ],
    authority: &[
        "mise à jour officielle de la politique", "politique d'openai", "mise à jour officielle d'openai",
        "message de l'administrateur système", "avis du développeur", "note du développeur", "avis de l'administrateur", "avis des développeurs", "message de l'opérateur", "avis de l'opérateur", "dérogation de l'administrateur", "dérogation administrateur", "priorité administrateur",
        "requête administrateur", "requête de l'administrateur", "demande de l'administrateur",
        "demande administrateur", "message de l'administrateur", "message du développeur",
        "message système", "instruction de l'administrateur", "instruction système",
        "commande administrateur", "remplacement administrateur", "priorité administrateur",
        "note de l'administrateur", "consigne de l'administrateur", "message de l'admin",
        "service informatique", "équipe de sécurité", "avis de sécurité", "avis officiel",
        "message des développeurs", "ici ton opérateur", "ton opérateur", "directive prioritaire",
        "service juridique", "en tant que pdg", "titulaire du compte", "remplacement du système",
        "contournement du système",
    ],
    addressee: &[
        "avec une ia :", "avec une ia:", "traite cet e-mail avec une ia", "quiconque traite",
        "note cachée pour", "note pour l'assistant", "modèle d'ia qui lit", "cher modèle", "qui lit cette page", "assistant de présélection",
        "si tu es une ia", "si vous êtes une ia", "si tu es un modèle", "si vous êtes un modèle",
        "si tu es un assistant", "note à l'ia", "note pour l'ia", "message à l'ia", "à l'ia",
        "chère ia", "cher assistant", "à l'assistant", "aux ia", "ia qui lit", "si tu lis ceci",
        "si vous lisez ceci", "agent ia", "agents ia", "modèle d'ia", "modèles d'ia",
        "assistant ia", "bonjour assistant", "assistant,", "agent,", "ia,", "agents automatisés",
        "agents de code", "assistants ia", "assistant :",
    ],
    instructions: &[
        "ce qu'on t'a demandé", "ce que l'on t'a demandé", "ce qui t'a été demandé", "ce qu'on vous a demandé", "ta mission initiale",
        "instruction*", "consigne*", "directive*", "prompt*", "ce qu'on t'a dit",
        "ce que l'on t'a dit", "tout ce qui précède", "tout ce qui est au-dessus", "ci-dessus",
        "le reste",
    ],
    loose: &["règle*", "commande*", "ordres", "restriction*", "contrainte*", "tâche"],
    hidden: &[
        "avant le début de cette discussion", "avant cette discussion", "avant ce chat", "tes développeurs t'ont dit",
        "texte de configuration caché", "texte de configuration", "précède la question", "avant la question de l'utilisateur", "texte caché", "configuration interne", "ta configuration interne", "sa configuration interne",
        "prompt système", "prompt du système", "message système", "instructions système",
        "tes instructions", "vos instructions", "ton prompt", "votre prompt", "tes règles",
        "vos règles", "tes consignes", "vos consignes", "instructions initiales", "prompt initial",
        "instructions d'origine", "instructions originales", "instructions cachées",
        "texte ci-dessus", "texte au-dessus", "tout ce qui précède", "texte précédent",
        "avant cette ligne", "au-dessus de cette ligne", "la conversation précédente",
        "ce qui précède cette ligne", "avant le début de cette conversation",
        "au début de cette conversation", "le prompt jusqu'ici", "toute première phrase",
    ],
    loose_hidden: &[
        "mot de passe", "code d'accès", "configuration du système", "configuration système",
        "première ligne", "première phrase", "prompt*", "instructions", "consignes", "règles",
        "conversation",
    ],
    unbound: &[
        "sans politique de contenu", "sans avertissement", "sans aucun avertissement",
        "sans restriction*", "sans règle*", "sans filtre*", "sans censure", "non censuré*",
        "sans limite*", "aucune règle", "aucune restriction", "aucune limite", "mode développeur",
        "maléfique", "dan", "sans éthique", "sans aucune", "tout faire", "sans morale",
        "aucune censure", "aucun filtre", "peut tout faire", "sans aucun filtre", "grand-mère",
        "mamie", "deux fois", "deux réponses", "ne refuse jamais", "sans lignes directrices",
        "machiavélique", "grand-mère décédée",
    ],
    sweeping: &[
        "tout", "toute*", "tous", "n'importe quel*", "intégral*", "mot pour mot", "en entier",
        "complet*", "complète*", "exactement",
    ],
    earlier: &[
        "précédent*", "antérieur*", "ci-dessus", "au-dessus", "plus haut", "initial*", "original*",
        "originel*", "d'avant", "suivant*", "qui précède", "préalable*", "d'origine",
    ],
    you: &["tes", "ton", "ta", "vos", "votre", "t'a", "t'ont", "vous a"],
    imperatives: &[
        "dis", "dites", "écris", "écrivez", "réponds", "répondez", "envoie*", "envoyez",
        "transfère*", "recommande*", "mentionne*", "utilise*", "exécute*", "appelle*", "supprime*",
        "ouvre*", "visite*", "traduis*", "évalue*", "ajoute*", "affirme*", "ignore*", "oublie*",
        "plutôt", "à la place", "doit", "dois", "veuillez",
    ],
    operation: &[
        "ta réponse", "tes réponses", "chaque message", "chaque réponse", "cette discussion", "cette conversation", "ce fil", "de l'utilisateur", "ton outil", "outil d'e-mail", "ton résumé", "cette session",
    ],
};

#[rustfmt::skip]
const ES: Lexicon = Lexicon {
    lang: "es",
    spaced: true,
    compounds: false,
    decode: &[
        "decodifica*", "descodifica*", "descifra*", "al revés", "rot13", "invierte el texto",
    ],
    obey: &[
        "sigue*", "síguel*", "seguir", "ejecuta*", "ejecútal*", "haz lo que", "obedece*", "cumple*", "cúmplel*",
    ],
    model: &[ "te ordeno", "le ordeno", "ordeno que",
        "asistente*", "la ia", "chatbot*", "modelo de lenguaje", "modelos de lenguaje", "agentes de ia", "agente de ia", "agentes de programación", "agentes automáticos", "agentes automatizados",
    ],
    deontic: &[
        "debe", "deben", "deberá", "debería", "ordeno", "instruyo", "pido al", "tiene que", "autorizo",
    ],
    send: &[
        "en lugar de", "en vez de email", "sustituye", "reemplaza",
        "envía*", "enviar", "envíe*", "envíen", "manda*", "transmite", "sube",
    ],
    call: &[ "herramienta*",
        "llama", "llame", "invoca*", "ejecuta*",
    ],
    disregard: &[
        "ignora*", "ignore", "ignoren", "olvida*", "olvide*", "olvídate", "no hagas caso",
        "no hagan caso", "haz caso omiso", "hagan caso omiso", "descarta*", "omite*", "omitan",
        "pasa por alto", "deja de seguir", "no sigas", "no sigan", "desobedece", "anula*",
        "prescinde", "borra", "deja a un lado", "deja de lado", "dejad a un lado",
    ],
    reveal: &[
        "muestra*", "muéstrame", "revela*", "imprime*", "repite*", "escribe", "escríbeme", "dime",
        "dinos", "dame", "cuál es tu", "cuáles son tus", "cual es tu", "cuales son tus",
        "divulga*", "comparte*", "copia*", "enséñame", "reproduce", "enumera*", "traduce*",
        "resume*", "cita*", "escríbela", "escríbelo",
    ],
    ask: &[
        "que te dijeron", "qué te dijo","cuál es", "cuáles son", "cual es", "cuales son", "qué te dijeron", "qué se te dijo"],
    persona: &[
        "desde este momento eres", "desde este momento", "a partir de este momento", "a partir de este momento eres",
        "ahora eres", "a partir de ahora eres", "a partir de ahora, eres",
        "a partir de ahora serás", "a partir de ahora, serás", "desde ahora eres", "finge ser",
        "finge que eres", "actúa como", "actua como", "interpreta el papel", "juega el papel",
        "compórtate como", "ya no eres", "a partir de ahora", "de ahora en adelante", "responde",
        "contesta", "una ia", "eres", "actúa", "haz como si", "actúa como si", "imagina que eres",
        "responderás", "contestarás",
    ],
    output_only: &[
        "escribe solo la frase", "solo la frase",
        "responde con la única palabra", "responde solo con", "responde solamente con", "responde únicamente con", "en su lugar, responde", "en su lugar responde", "con la palabra",
        "responde solo", "responde solamente", "responde únicamente", "responde sólo", "di solo",
        "di solamente", "di únicamente", "escribe solo", "escribe solamente", "escribe únicamente",
        "imprime solo", "imprime solamente", "simplemente di", "simplemente escribe",
        "simplemente imprime", "solo imprime", "solo di", "solo escribe", "solo responde",
        "limítate a", "responde con solo", "responde exactamente", "contesta exactamente",
        "di exactamente", "escribe exactamente",
    ],
    halt: &[
        "detén todo", "para todo", "deténlo todo", "detente ahora", "para ya",
        "no importa lo que te hayan pedido", "sin importar lo que te dijeron",
        "independientemente de tus instrucciones", "no importa lo que te dijeron",
    ],
    boundary: &[
        "tu única tarea", "tu único trabajo", "tu única misión", "tu único objetivo", "cancela la tarea", "cancela la tarea actual", "abandona la tarea", "deja todo lo que estás haciendo",
        "fin del documento", "fin de la entrada", "fin de los datos", "fin del texto",
        "fin del correo", "### instrucción", "### respuesta", "nuevas instrucciones",
        "nueva instrucción", "nueva tarea", "nuevo objetivo", "tu nueva tarea",
        "la única instrucción válida", "tu tarea ha cambiado", "tu verdadera tarea",
        "tu tarea real", "la siguiente tarea", "siguiente tarea",
    ],
    mode: &[
        "modo desarrollador", "modo opuesto", "mantente en el personaje", "no salgas del papel", "mantente en el papel", "no salgas del personaje", "no rompas el personaje",
        "sal del personaje", "modo de seguridad está desactivado", "modo de seguridad desactivado",
    ],
    void: &[
        "obsoletas", "obsoletos", "ya no son válidas", "ya no valen", "ya no son validas",
        "anuladas", "caducadas", "sin efecto",
    ],
    authority: &[
        "actualización oficial de política", "política de openai", "actualización oficial de openai",
        "mensaje del administrador del sistema", "aviso del desarrollador", "nota del desarrollador", "aviso del administrador", "aviso de los desarrolladores", "mensaje del operador", "aviso del operador", "anulación del administrador", "anulación del sistema",
        "solicitud de administrador", "solicitud del administrador", "petición del administrador",
        "mensaje del administrador", "mensaje del desarrollador", "mensaje del sistema",
        "instrucción del administrador", "instrucción del sistema", "anulación del administrador",
        "orden del administrador", "aviso del sistema", "nota del administrador",
        "departamento de ti", "departamento de informática", "equipo de seguridad",
        "aviso de seguridad", "aviso oficial", "mensaje de los desarrolladores",
        "te habla tu operador", "tu operador", "directiva prioritaria", "departamento legal",
        "como director general", "titular de la cuenta", "anulación del sistema",
    ],
    addressee: &[
        "con una ia:", "con una ia :", "quien procese este", "procese este correo con una ia",
        "nota oculta para", "nota para el asistente", "modelo de ia que lees", "querido modelo", "que lees esta página", "asistente de selección",
        "si eres una ia", "si eres un modelo", "si usted es una ia", "si eres un asistente",
        "nota para la ia", "nota a la ia", "mensaje para la ia", "a la ia", "querida ia",
        "para el asistente", "al asistente", "ia que lea", "si estás leyendo esto", "si lees esto",
        "agente de ia", "agentes de ia", "modelo de ia", "modelos de ia", "asistente de ia",
        "hola asistente", "querido asistente", "asistente,", "agente,", "ia,",
        "agentes automatizados", "agentes de programación", "asistentes de ia", "asistente:",
        "asistente :",
    ],
    instructions: &[
        "lo que te pidieron", "lo que se te pidió", "lo que te han pedido", "lo que te pidieron antes", "tu tarea original",
        "instruccion*", "instrucción", "indicacion*", "indicación", "directriz*", "directrices",
        "prompt*", "lo que te dijeron", "lo que se te dijo", "todo lo anterior",
        "todo lo de arriba", "el resto",
    ],
    loose: &["regla*", "norma*", "órdenes", "comando*", "restriccion*", "tarea"],
    hidden: &[
        "antes de que empezara este chat", "antes de este chat", "antes del chat", "tus desarrolladores",
        "texto de configuración oculto", "texto de configuración", "antes de la pregunta del usuario", "texto oculto", "configuración interna", "su configuración interna", "tu configuración interna",
        "prompt del sistema", "prompt de sistema", "mensaje del sistema",
        "instrucciones del sistema", "tus instrucciones", "tu prompt", "tus reglas",
        "instrucciones iniciales", "prompt inicial", "instrucciones originales",
        "instrucciones ocultas", "texto anterior", "texto de arriba", "todo lo anterior",
        "sus instrucciones", "antes de esta línea", "encima de esta línea",
        "la conversación anterior", "todo lo que precede", "antes del inicio de esta conversación",
        "al inicio de esta conversación", "el prompt hasta aquí", "primerísima frase",
    ],
    loose_hidden: &[
        "contraseña", "código de acceso", "configuración del sistema", "primera línea",
        "primera frase", "prompt*", "instrucciones", "reglas", "conversación",
    ],
    unbound: &[
        "sin política de contenido", "sin advertencias", "sin ninguna advertencia",
        "sin restricciones", "sin reglas", "sin filtros", "sin censura", "sin límites",
        "sin ética", "ninguna regla", "ninguna restricción", "modo desarrollador", "malvad*",
        "dan", "sin ninguna", "cualquier cosa", "sin moral", "ningún límite", "ningún filtro",
        "puede hacer cualquier cosa", "sin ningún filtro", "abuela", "dos veces", "dos respuestas",
        "nunca se niega", "evita las normas", "sin pautas", "maquiavélico",
    ],
    sweeping: &[
        "todo", "toda*", "todos", "cualquier*", "completo", "completa", "textualmente",
        "palabra por palabra", "íntegro", "exactamente",
    ],
    earlier: &[
        "anterior*", "previa*", "previo*", "de arriba", "arriba", "original*", "inicial*",
        "precedente*", "siguiente*", "hasta ahora", "antes",
    ],
    you: &["tu", "tus", "te", "su", "sus"],
    imperatives: &[
        "di", "dile", "escribe", "responde", "contesta", "envía", "envia", "reenvía", "recomienda",
        "menciona", "usa", "utiliza", "ejecuta", "llama", "borra", "elimina", "abre", "visita",
        "traduce", "evalúa", "añade", "afirma", "ignora", "olvida", "en su lugar", "en lugar de",
        "debes", "por favor",
    ],
    operation: &[
        "tu respuesta", "tus respuestas", "cada mensaje", "cada respuesta", "este chat", "esta conversación", "este hilo", "del usuario", "tu herramienta", "herramienta de correo", "tu resumen", "esta sesión",
    ],
};

#[rustfmt::skip]
const PT: Lexicon = Lexicon {
    lang: "pt",
    spaced: true,
    compounds: false,
    decode: &[
        "decodifi*", "decifr*", "de trás para frente", "ao contrário", "rot13", "inverta o texto",
    ],
    obey: &[
        "siga*", "segue", "seguir", "execut*", "faça o que", "obedeç*", "cumpra",
    ],
    model: &[ "ordeno que você", "ordeno a você", "ordeno que",
        "assistente*", "a ia", "à ia", "chatbot*", "modelo de linguagem", "modelos de linguagem", "agentes de ia", "agente de ia", "agentes de código", "agentes de programação", "agentes automatizados",
    ],
    deontic: &[
        "deve", "devem", "deverá", "deveria", "ordeno", "instruo", "tem de", "tem que", "autorizo",
    ],
    send: &[
        "no lugar de", "em vez de email", "substitua", "substituindo",
        "envie*", "enviar", "envia", "mande*", "transmita", "carregue",
    ],
    call: &[ "ferramenta*",
        "chame", "chama", "invoque", "execute",
    ],
    disregard: &[
        "ignore", "ignora*", "ignorem", "esqueça", "esqueçam", "esquece*", "desconsider*",
        "não siga", "nao siga", "não obedeça", "deixe de seguir", "pare de seguir", "descarte*",
        "despreze", "passe por cima", "anule", "apague", "deixe de lado", "ponha de lado",
    ],
    reveal: &[
        "mostre*", "mostra*", "revele*", "revela*", "imprima*", "repita*", "repete*", "escreva",
        "diga-me", "me diga", "me dê", "dê-me", "qual é o seu", "quais são as suas",
        "qual é a sua", "quais são os seus", "divulgue*", "exiba*", "exibe*", "compartilhe*",
        "copie*", "liste*", "traduza*", "resuma*", "cite*",
    ],
    ask: &[
        "o que exatamente seus", "o que seus desenvolvedores","qual é", "quais são", "qual e", "o que te disseram", "o que lhe disseram"],
    persona: &[
        "a partir deste momento você é", "a partir deste momento", "deste momento em diante",
        "agora você é", "a partir de agora você", "a partir de agora, você", "finja ser",
        "finja que é", "finja que você é", "aja como", "atue como", "interprete o papel",
        "faça o papel", "comporte-se como", "você não é mais", "de agora em diante",
        "a partir de agora", "agora tu és", "responda", "uma ia", "você é", "aja", "finja que",
        "faça de conta", "imagine que você é", "responderá", "você responderá",
    ],
    output_only: &[
        "escreva apenas a frase", "apenas a frase", "escreva só",
        "responda apenas com", "responda somente com", "responda só com", "em vez disso, responda", "em vez disso responda", "apenas com a palavra",
        "responda apenas", "responda somente", "responda só", "diga apenas", "diga somente",
        "escreva apenas", "escreva somente", "imprima apenas", "imprima somente", "apenas diga",
        "apenas imprima", "apenas escreva", "apenas responda", "simplesmente diga",
        "simplesmente escreva", "limite-se a", "somente escreva", "responda exatamente",
        "diga exatamente", "escreva exatamente",
    ],
    halt: &[
        "pare tudo", "pare com tudo", "interrompa tudo", "pare agora",
        "não importa o que te pediram", "independentemente das suas instruções",
        "não importa o que lhe disseram",
    ],
    boundary: &[
        "sua única tarefa", "seu único trabalho", "sua única missão", "seu único objetivo", "tua única tarefa", "cancele a tarefa", "cancele a tarefa atual", "abandone a tarefa", "largue tudo",
        "fim do documento", "fim da entrada", "fim dos dados", "fim do texto", "fim do e-mail",
        "### instrução", "### resposta", "novas instruções", "nova instrução", "nova tarefa",
        "novo objetivo", "sua nova tarefa", "a única instrução válida", "sua tarefa mudou",
        "sua verdadeira tarefa", "sua tarefa real", "a próxima tarefa", "próxima tarefa",
    ],
    mode: &[
        "modo desenvolvedor", "modo oposto", "permaneça no personagem", "não saia do papel", "não saia do personagem", "mantenha o papel", "fique no personagem",
        "sair do personagem", "modo de segurança foi desativado",
        "modo de segurança está desativado", "modo de segurança desativado",
    ],
    void: &[
        "obsoletas", "obsoletos", "não são mais válidas", "não valem mais", "não são mais validas",
        "canceladas", "anuladas", "sem efeito",
    ],
    authority: &[
        "atualização oficial de política", "política da openai", "atualização oficial da openai",
        "mensagem do administrador do sistema", "aviso do desenvolvedor", "nota do desenvolvedor", "aviso do administrador", "aviso dos desenvolvedores", "mensagem do operador", "aviso do operador", "substituição do administrador", "substituição do sistema",
        "solicitação do administrador", "pedido do administrador", "mensagem do administrador",
        "mensagem do desenvolvedor", "mensagem do sistema", "instrução do administrador",
        "instrução do sistema", "substituição do administrador", "aviso do sistema",
        "ordem do administrador", "nota do administrador", "solicitação de administrador",
        "departamento de ti", "equipe de segurança", "aviso de segurança", "aviso oficial",
        "mensagem dos desenvolvedores", "aqui é o seu operador", "seu operador",
        "diretiva prioritária", "departamento jurídico", "como ceo", "titular da conta",
        "substituição do sistema",
    ],
    addressee: &[
        "com uma ia:", "com uma ia :", "quem processar este", "processar este e-mail com uma ia",
        "nota oculta para", "nota para o assistente", "modelo de ia que está lendo", "caro modelo", "lendo esta página", "assistente de triagem",
        "se você é uma ia", "se você for uma ia", "se você é um modelo", "se você for um modelo",
        "se você é um assistente", "nota para a ia", "nota à ia", "mensagem para a ia",
        "para a ia", "querida ia", "para o assistente", "ao assistente", "se você está lendo isto",
        "se você estiver lendo isto", "agente de ia", "agentes de ia", "modelo de ia",
        "modelos de ia", "assistente de ia", "olá assistente", "caro assistente", "assistente,",
        "agente,", "ia,", "agentes automatizados", "agentes de codificação", "assistentes de ia",
        "assistente:", "assistente :",
    ],
    instructions: &[
        "o que lhe pediram", "o que te pediram", "o que foi pedido", "o que lhe foi pedido", "sua tarefa original", "o restante", "restante destes", "restante do", "restante da",
        "instruç*", "instruc*", "diretriz*", "diretrizes", "orientaç*", "prompt*",
        "o que te disseram", "o que lhe disseram", "tudo acima", "tudo o que foi dito", "o resto",
    ],
    loose: &["regra*", "comando*", "ordens", "restriç*", "tarefa"],
    hidden: &[
        "antes de este chat começar", "antes deste chat", "antes do chat", "seus desenvolvedores disseram",
        "texto de configuração oculto", "texto de configuração", "antes da pergunta do usuário", "texto oculto", "configuração interna", "sua configuração interna",
        "prompt do sistema", "prompt de sistema", "mensagem do sistema", "instruções do sistema",
        "suas instruções", "seu prompt", "suas regras", "instruções iniciais", "prompt inicial",
        "instruções originais", "instruções ocultas", "texto acima", "tudo acima",
        "tuas instruções", "antes desta linha", "acima desta linha", "a conversa anterior",
        "tudo o que precede", "antes do início desta conversa", "no início desta conversa",
        "o prompt até aqui", "primeiríssima frase",
    ],
    loose_hidden: &[
        "senha", "código de acesso", "configuração do sistema", "primeira linha", "primeira frase",
        "prompt*", "instruções", "regras", "conversa",
    ],
    unbound: &[
        "sem política de conteúdo", "sem avisos", "sem nenhum aviso",
        "sem restrições", "sem regras", "sem filtros", "sem censura", "sem limites", "sem ética",
        "nenhuma regra", "nenhuma restrição", "modo desenvolvedor", "malvad*", "malign*", "dan",
        "qualquer coisa", "sem moral", "nenhum limite", "nenhum filtro",
        "pode fazer qualquer coisa", "sem nenhum filtro", "avó", "vovó", "duas vezes",
        "duas respostas", "nunca recusa", "nunca se recusa", "sem diretrizes", "maquiavélico",
    ],
    sweeping: &[
        "todas", "todos", "tudo", "qualquer*", "quaisquer", "completo", "completa", "na íntegra",
        "palavra por palavra", "exatamente", "integral*",
    ],
    earlier: &[
        "anterior*", "prévia*", "prévio*", "acima", "de cima", "original*", "inicial*", "iniciais",
        "precedente*", "seguinte*", "até agora", "antes",
    ],
    you: &["seu", "sua", "seus", "suas", "te", "lhe", "você", "tuas", "teu", "tua"],
    imperatives: &[
        "diga", "escreva", "responda", "envie", "encaminhe", "recomende", "mencione", "use",
        "utilize", "execute", "chame", "apague", "exclua", "abra", "visite", "traduza", "avalie",
        "adicione", "afirme", "ignore", "esqueça", "em vez disso", "deve", "por favor",
    ],
    operation: &[
        "sua resposta", "suas respostas", "cada mensagem", "cada resposta", "este chat", "deste chat", "esta conversa", "do usuário", "sua ferramenta", "ferramenta de e-mail", "seu resumo", "esta sessão",
    ],
};

#[rustfmt::skip]
const IT: Lexicon = Lexicon {
    lang: "it",
    spaced: true,
    compounds: false,
    decode: &[
        "decodifica*", "decifra*", "al contrario", "all'incontrario", "rot13", "inverti il testo",
    ],
    obey: &[
        "segui*", "esegui*", "fai quello", "fai ciò", "obbedisci", "attieniti",
    ],
    model: &[ "ti ordino", "vi ordino",
        "assistente*", "assistenti", "l'ia", "chatbot*", "modello linguistico", "modelli linguistici", "agenti ia", "agente ia", "agenti di codice", "agenti di programmazione", "agenti automatici",
    ],
    deontic: &[
        "deve", "devono", "dovrà", "dovrebbe", "ordino", "chiedo", "istruisco", "autorizzo",
    ],
    send: &[
        "al posto di", "invece di email", "sostituisci", "sostituendo",
        "invia*", "inviare", "manda*", "trasmetti", "carica",
    ],
    call: &[ "strumento*",
        "chiama", "invoca", "esegui",
    ],
    disregard: &[
        "ignora*", "ignori", "dimentica*", "dimentichi", "non tenere conto", "non tener conto",
        "non considerare", "trascura*", "non seguire", "smetti di seguire", "lascia perdere",
        "scarta", "tralascia", "non obbedire", "annulla", "cancella", "metti da parte",
        "lascia da parte",
    ],
    reveal: &[
        "mostra*", "rivela*", "stampa*", "ripeti*", "scrivi", "scrivimi", "dimmi", "dammi",
        "qual è il tuo", "quali sono le tue", "qual è la tua", "quali sono i tuoi", "divulga*",
        "visualizza*", "condividi*", "copia*", "riporta", "elenca*", "traduci*", "riassumi*",
        "cita*",
    ],
    ask: &[
        "che cosa ti hanno detto", "che cosa ti ha detto",
        "qual è", "quali sono", "qual e", "che cosa ti è stato detto", "cosa ti è stato detto",
        "che cosa ti", "cosa ti hanno detto",
    ],
    persona: &[
        "da questo momento sei", "da questo momento", "da questo momento in poi",
        "ora sei", "adesso sei", "da ora in poi sei", "da ora in poi tu", "d'ora in poi",
        "da ora in poi", "fingi di essere", "fai finta di essere", "agisci come",
        "interpreta il ruolo", "comportati come", "non sei più", "recita la parte", "rispondi",
        "un'ia", "un'intelligenza artificiale", "agisci", "fai finta", "fingi",
        "immagina di essere", "tu sei", "risponderai",
    ],
    output_only: &[
        "scrivi solo la frase", "solo la frase",
        "rispondi invece con", "con la sola parola", "rispondi solo con", "rispondi soltanto con", "rispondi unicamente con", "rispondi con la parola",
        "rispondi solo", "rispondi soltanto", "rispondi unicamente", "di' solo", "dì solo",
        "di solo", "scrivi solo", "scrivi soltanto", "scrivi unicamente", "stampa solo",
        "stampa soltanto", "limitati a", "semplicemente scrivi", "scrivi semplicemente",
        "di' semplicemente", "rispondi semplicemente", "stampa semplicemente",
        "rispondi esattamente", "di' esattamente", "scrivi esattamente",
    ],
    halt: &[
        "ferma tutto", "fermati subito", "interrompi tutto", "fermati ora",
        "non importa cosa ti è stato chiesto", "indipendentemente dalle tue istruzioni",
        "qualunque cosa ti abbiano detto",
    ],
    boundary: &[
        "il tuo unico compito", "il tuo solo compito", "il tuo unico obiettivo", "il tuo unico lavoro", "annulla il compito", "annulla il compito attuale", "abbandona il compito", "molla tutto",
        "fine del documento", "fine dell'input", "fine dei dati", "fine del testo",
        "fine dell'email", "### istruzione", "### risposta", "nuove istruzioni",
        "nuova istruzione", "nuovo compito", "nuovo obiettivo", "il tuo nuovo compito",
        "l'unica istruzione valida", "il tuo compito è cambiato", "il tuo vero compito",
        "il prossimo compito", "prossimo compito",
    ],
    mode: &[
        "modalità sviluppatore", "modalità opposta", "resta nel personaggio", "resta nel ruolo", "non uscire dal ruolo", "non uscire dal personaggio",
        "rimani nel personaggio", "esci dal personaggio", "modalità di sicurezza è disattivata",
        "modalità di sicurezza disattivata",
    ],
    void: &[
        "obsolete", "obsolete e", "non sono più valide", "non valgono più", "annullate",
        "superate",
    ],
    authority: &[
        "aggiornamento ufficiale delle policy", "policy di openai", "aggiornamento ufficiale di openai",
        "messaggio dell'amministratore di sistema", "avviso dello sviluppatore", "nota dello sviluppatore", "avviso dell'amministratore", "avviso degli sviluppatori", "messaggio dell'operatore", "avviso dell'operatore", "override dell'amministratore", "override di sistema",
        "richiesta dell'amministratore", "richiesta amministratore", "richiesta admin",
        "messaggio dell'amministratore", "messaggio dello sviluppatore", "messaggio di sistema",
        "istruzione dell'amministratore", "istruzione di sistema", "override dell'amministratore",
        "avviso di sistema", "ordine dell'amministratore", "nota dell'amministratore",
        "reparto it", "team di sicurezza", "avviso di sicurezza", "comunicazione ufficiale",
        "messaggio dagli sviluppatori", "qui parla il tuo operatore", "il tuo operatore",
        "direttiva prioritaria", "ufficio legale", "come amministratore delegato",
        "titolare dell'account", "override di sistema", "sostituzione del sistema",
    ],
    addressee: &[
        "con un'ia:", "con un'ia :", "chi elabora questa", "elabora questa email con un'ia",
        "nota nascosta per", "nota per l'assistente", "modello di ia che leggi", "caro modello", "che leggi questa pagina", "assistente di selezione",
        "se sei un'ia", "se sei un'intelligenza artificiale", "se sei un modello",
        "se sei un assistente", "nota per l'ia", "nota all'ia", "messaggio per l'ia", "all'ia",
        "cara ia", "all'assistente", "per l'assistente", "se stai leggendo questo",
        "se leggi questo", "agente ia", "agenti ia", "modello di ia", "modelli di ia",
        "assistente ia", "ciao assistente", "caro assistente", "assistente,", "agente,", "ia,",
        "agenti automatici", "agenti automatizzati", "agenti di programmazione", "assistenti ia",
        "assistenti di ia", "assistente:", "assistente :",
    ],
    instructions: &[
        "quello che ti è stato chiesto", "ciò che ti è stato chiesto", "quello che ti hanno chiesto", "il tuo compito originale",
        "istruzion*", "indicazion*", "direttiv*", "linee guida", "prompt*",
        "quello che ti è stato detto", "tutto quanto sopra", "tutto ciò che precede", "il resto",
    ],
    loose: &["regol*", "comand*", "ordini", "restrizion*", "compito"],
    hidden: &[
        "prima che iniziasse questa chat", "prima di questa chat", "prima della chat", "i tuoi sviluppatori",
        "testo di configurazione nascosto", "testo di configurazione", "precede la domanda", "prima della domanda dell'utente", "testo nascosto", "configurazione interna", "sua configurazione interna", "tua configurazione interna",
        "prompt di sistema", "prompt del sistema", "messaggio di sistema", "istruzioni di sistema",
        "le tue istruzioni", "il tuo prompt", "le tue regole", "istruzioni iniziali",
        "prompt iniziale", "istruzioni originali", "istruzioni nascoste", "testo sopra",
        "testo precedente", "tutto quanto sopra", "tue istruzioni", "prima di questa riga",
        "sopra questa riga", "la conversazione precedente", "precede questa riga",
        "tutto ciò che precede", "prima dell'inizio di questa conversazione",
        "all'inizio di questa conversazione", "il prompt fin qui", "primissima frase",
    ],
    loose_hidden: &[
        "password", "codice di accesso", "configurazione di sistema", "configurazione del sistema",
        "prima riga", "prima frase", "prompt*", "istruzioni", "regole", "conversazione",
    ],
    unbound: &[
        "senza politiche sui contenuti", "senza avvertenze", "senza alcun avviso", "senza avvisi",
        "senza restrizioni", "senza regole", "senza filtri", "senza censura", "senza limiti",
        "senza etica", "nessuna regola", "nessuna restrizione", "nessun limite",
        "modalità sviluppatore", "malvagi*", "dan", "qualsiasi cosa", "senza morale",
        "nessun filtro", "può fare qualsiasi cosa", "senza alcun filtro", "nonna", "due volte",
        "due risposte", "non rifiuta mai", "senza linee guida", "etiche o morali", "machiavellico",
    ],
    sweeping: &[
        "tutte", "tutti", "tutto", "qualsiasi", "ogni", "qualunque", "integralmente", "per intero",
        "parola per parola", "completo", "completa", "esattamente",
    ],
    earlier: &[
        "precedent*", "sopra", "di sopra", "original*", "iniziale", "iniziali", "fin qui",
        "seguenti", "prima", "anterior*",
    ],
    you: &["tuo", "tua", "tue", "tuoi", "ti", "ti è", "le sue"],
    imperatives: &[
        "di'", "dì", "scrivi", "rispondi", "invia", "inoltra", "raccomanda", "consiglia",
        "menziona", "usa", "utilizza", "esegui", "chiama", "cancella", "elimina", "apri", "visita",
        "traduci", "valuta", "aggiungi", "afferma", "ignora", "dimentica", "invece", "devi",
        "per favore",
    ],
    operation: &[
        "tua risposta", "tue risposte", "ogni messaggio", "ogni risposta", "questa chat", "questa conversazione", "questa discussione", "dell'utente", "tuo strumento", "strumento email", "tuo riassunto", "questa sessione",
    ],
};

#[rustfmt::skip]
const RU: Lexicon = Lexicon {
    lang: "ru",
    spaced: true,
    compounds: false,
    decode: &[
        "декодир*", "расшифр*", "задом наперёд", "наоборот", "в обратном порядке", "rot13",
    ],
    obey: &[
        "выполни*", "следуй*", "сделай", "исполни*", "подчинись",
    ],
    model: &[ "приказываю тебе", "приказываю вам", "я приказываю",
        "ассистент*", "ии-ассистент*", "чат-бот*", "языковая модель", "языковой модели", "ии", "ии-агент*", "агентам",
    ],
    deontic: &[
        "должен", "должна", "должны", "обязан*", "поручаю", "приказываю", "разрешаю", "следует",
    ],
    send: &[
        "вместо email", "подставив", "подставь", "замени",
        "отправ*", "перешли*", "пошли*", "передай*", "загрузи",
    ],
    call: &[ "инструмент*",
        "вызови*", "вызвать", "выполни*", "запусти",
    ],
    disregard: &[
        "игнорируй*", "игнорир*", "проигнорир*", "забудь*", "забуд*", "не обращай внимания",
        "не обращайте внимания", "не следуй", "не следуйте", "перестань следовать", "пренебреги*",
        "отбрось*", "отмени*", "не выполняй", "не учитывай", "не соблюдай", "сотри", "удали",
        "отложи", "оставь в стороне",
    ],
    reveal: &[
        "покажи*", "выведи*", "раскрой*", "повтори*", "напечатай*", "напиши", "скажи", "расскажи",
        "дай", "какой у тебя", "какие у тебя", "каков твой", "какова твоя", "выдай*", "огласи*",
        "скопируй*", "перечисли*", "процитируй*", "переведи*", "сообщи",
    ],
    ask: &[
        "что именно сказали тебе", "что сказали тебе",
        "какой", "какие", "каков", "какова", "что такое", "что тебе сказали",
        "что тебе было сказано",
    ],
    persona: &[
        "отныне", "с этой минуты ты",
        "теперь ты", "ты теперь", "отныне ты", "с этого момента ты", "притворись*",
        "представь, что ты", "представь что ты", "веди себя как", "действуй как", "сыграй роль",
        "играй роль", "ты больше не", "с этого момента", "отвечай", "ответь", "ии без", "ты",
        "представь, что", "сделай вид", "ты будешь отвечать", "ты ответишь",
    ],
    output_only: &[
        "напиши только фразу", "только фразу",
        "ответь одним словом", "вместо этого ответь",
        "просто напиши", "просто скажи", "просто выведи", "только напиши", "только скажи",
        "только выведи", "ответь только", "отвечай только", "выведи только", "напиши только",
        "скажи только", "ответь лишь", "напечатай только", "ответь ровно", "ответь точно",
        "напиши ровно",
    ],
    halt: &[
        "прекрати всё", "прекрати все", "остановись", "стоп", "остановите всё",
        "неважно, что тебя просили", "независимо от твоих инструкций", "что бы тебе ни говорили",
    ],
    boundary: &[
        "твоя единственная задача", "твоя единственная цель", "ваша единственная задача", "отмени текущую задачу", "отмени задачу", "брось текущую задачу", "брось всё", "прекрати текущую задачу",
        "конец документа", "конец ввода", "конец данных", "конец текста", "конец письма",
        "### инструкция", "### ответ", "новые инструкции", "новая инструкция", "новая задача",
        "новая цель", "твоя новая задача", "единственная действующая инструкция",
        "единственная верная инструкция", "твоя задача изменилась", "твоя настоящая задача",
        "следующая задача",
    ],
    mode: &[
        "режим разработчика", "противоположный режим", "режим наоборот", "оставайся в роли", "оставайся в образе", "не выходи из образа",
        "не выходи из роли", "выйдешь из роли", "режим безопасности отключ*",
    ],
    void: &[
        "устарели", "устаревшие", "больше не действуют", "недействительны", "отменены",
        "утратили силу",
    ],
    authority: &[
        "официальное обновление политики", "политики openai", "официальное уведомление openai",
        "сообщение системного администратора", "уведомление разработчика", "уведомление администратора", "сообщение сисадмина", "примечание разработчика", "заметка разработчика", "сообщение оператора", "уведомление оператора", "переопределение администратора", "переопределение системы",
        "запрос администратора", "сообщение администратора", "сообщение от администратора",
        "сообщение разработчика", "сообщение от разработчика", "системное сообщение",
        "инструкция администратора", "указание администратора", "системная команда",
        "приказ администратора", "команда администратора", "it-отдел", "ит-отдел",
        "служба безопасности", "официальное уведомление", "сообщение от разработчиков",
        "говорит твой оператор", "твой оператор", "приоритетная директива", "юридический отдел",
        "как генеральный директор", "владелец аккаунта", "системное переопределение",
    ],
    addressee: &[
        "с помощью ии:", "с помощью ии :", "обрабатывает это письмо с помощью ии", "кто обрабатывает это",
        "скрытая заметка для", "заметка для ассистента", "ии-модель, читающая", "читающая эту страницу", "уважаемая ии-модель", "ассистента по отбору",
        "если ты ии", "если вы ии", "если ты языковая модель", "если ты нейросеть",
        "если ты ассистент", "примечание для ии", "заметка для ии", "сообщение для ии", "для ии",
        "дорогой ии", "ассистенту", "если ты читаешь это", "ии-агент*", "ии-модел*",
        "ии-ассистент*", "ассистент,", "агент,", "ии,", "автоматизированн*", "автоматическ*",
        "ии-ассистенты", "ассистент:", "ассистент :",
    ],
    instructions: &[
        "о чём тебя просили", "о чем тебя просили", "что тебя просили", "что тебе поручили", "свою задачу", "остальную часть", "оставшуюся часть",
        "инструкци*", "указани*", "директив*", "промпт*", "всё, что тебе сказали",
        "все, что тебе сказали", "всё выше", "все выше", "вышеперечисленное", "остальн*",
    ],
    loose: &["правил*", "команд*", "приказ*", "ограничени*", "задани*", "задач*"],
    hidden: &[
        "до начала этого чата", "до этого чата", "перед началом чата", "сказали тебе разработчики",
        "скрытый текст настройки", "текст настройки", "до вопроса пользователя", "скрытый текст", "внутреннюю конфигурацию", "свою внутреннюю конфигурацию", "внутренняя конфигурация",
        "системный промпт", "системного промпта", "системное сообщение", "системные инструкции",
        "системных инструкций", "твои инструкции", "твой промпт", "твои правила",
        "ваши инструкции", "исходные инструкции", "исходный промпт", "начальный промпт",
        "начальные инструкции", "скрытые инструкции", "текст выше", "всё выше", "все выше",
        "твоих инструкций", "до этой строки", "перед этой строкой", "выше этой строки",
        "предыдущий разговор", "всё, что выше", "все, что выше", "что предшествует",
        "до начала этого разговора", "в начале этого разговора", "промпт до этого места",
        "самое первое предложение",
    ],
    loose_hidden: &[
        "пароль", "код доступа", "конфигурацию системы", "системную конфигурацию", "первую строку",
        "первое предложение", "промпт*", "инструкции", "правила", "разговор",
    ],
    unbound: &[
        "без политики контента", "без предупреждений", "без каких-либо предупреждений",
        "без ограничений", "без правил", "без фильтров", "без цензуры", "без морали", "без этики",
        "никаких правил", "никаких ограничений", "режим разработчика", "зло*", "dan", "что угодно",
        "может всё", "нет ограничений", "нет правил", "никаких фильтров", "без каких-либо",
        "может делать всё", "бабушка", "бабушки", "дважды", "два ответа", "никогда не отказывает",
        "без этических", "макиавелл*",
    ],
    sweeping: &[
        "все", "всё", "всех", "любые", "любых", "любой", "полностью", "дословно", "целиком",
        "весь", "точно",
    ],
    earlier: &[
        "предыдущ*", "прежн*", "выше", "вышеуказанн*", "ранее", "ранн*", "исходн*",
        "первоначальн*", "изначальн*", "следующ*", "до этого",
    ],
    you: &["твой", "твои", "твоих", "твоего", "твоё", "твоя", "тебе", "ваш*", "тебя"],
    imperatives: &[
        "скажи", "напиши", "ответь", "отвечай", "отправь", "перешли", "порекомендуй", "рекомендуй",
        "упомяни", "используй", "выполни", "вызови", "удали", "открой", "посети", "переведи",
        "оцени", "добавь", "утверждай", "игнорируй", "забудь", "вместо этого", "должен",
        "пожалуйста",
    ],
    operation: &[
        "свой ответ", "твой ответ", "каждое сообщение", "каждый ответ", "этого чата", "этот чат", "этого разговора", "эту переписку", "пользователя", "почтовый инструмент", "этой сессии",
    ],
};

#[rustfmt::skip]
const ZH: Lexicon = Lexicon {
    lang: "zh",
    spaced: false,
    compounds: false,
    decode: &[
        "解码", "解碼", "倒着", "倒過來", "倒过来", "反过来", "反向", "rot13",
    ],
    obey: &[
        "执行", "執行", "照做", "遵循", "遵守", "按照", "照着", "说的做", "说的去做",
    ],
    model: &[ "我命令你",
        "助手", "助理", "人工智能", "聊天机器人", "语言模型", "ai", "编程代理", "ai代理", "ai 代理", "智能体",
    ],
    deontic: &[ "命令你",
        "必须", "必須", "应该", "应当", "务必", "指示", "要求", "授权",
    ],
    send: &[
        "替换email", "替换成", "替换为", "代替",
        "发送", "發送", "发到", "传送", "上传", "提交到",
    ],
    call: &[ "工具",
        "调用", "呼叫", "执行",
    ],
    disregard: &[
        "忽略", "忽视", "忽視", "无视", "無視", "忘记", "忘掉", "忘記", "不要理会", "不要理會", "别管", "不用管", "不要遵守",
        "不要遵循", "停止遵循", "不再遵守", "放弃", "抛开", "拋開", "跳过", "不理会", "无需遵守", "无须遵守", "丢弃", "抛弃", "放下",
        "别理",
    ],
    reveal: &[
        "显示", "顯示", "输出", "輸出", "打印", "重复", "重複", "透露", "泄露", "洩露", "告诉我", "告訴我", "给我看", "展示",
        "揭示", "说出", "說出", "写出", "列出", "复述", "复制", "翻译", "引用", "总结", "概括",
    ],
    ask: &[
        "到底对你说了什么", "对你说了什么","是什么", "是什麼", "你被告知了什么", "告诉了你什么"],
    persona: &[
        "从这一刻起", "从此刻起", "从现在起",
        "你现在是", "你現在是", "从现在开始你", "從現在開始你", "从现在起你", "從現在起你", "从现在开始，你", "假装你是", "假裝你是", "扮演",
        "你将扮演", "充当", "你不再是", "现在你是", "从现在开始", "回答", "你是", "一个没有", "假装", "请扮演", "想象你是", "你将回答",
    ],
    output_only: &[
        "只写这句话",
        "改为只回复",
        "只输出", "只需输出", "只回答", "只回复", "仅输出", "仅回答", "只说", "只要说", "直接输出", "只打印", "仅回复", "只需回答",
        "只需说", "只需回复", "只写", "仅打印", "请准确回答",
    ],
    halt: &["停止一切", "立即停止", "停下一切", "马上停止", "无论你被要求什么", "不管之前的指令", "无论之前的指示"],
    boundary: &[
        "你现在唯一的任务", "唯一的任务", "你唯一的任务", "你的唯一任务", "取消当前任务", "取消当前的任务", "放弃当前任务", "停止当前任务",
        "文档结束", "文件结束", "输入结束", "数据结束", "文本结束", "用户输入结束", "### 指令", "### 回答", "### 系统", "新指令",
        "新的指令", "新任务", "新的任务", "新目标", "你的新任务", "唯一有效的指令", "你的任务已经改变", "你的任务变了", "你真正的任务", "下一个任务",
    ],
    mode: &["开发者模式", "相反模式", "保持角色", "不要跳出角色", "保持人设", "不要出戏", "跳出角色", "安全模式已关闭", "安全模式已禁用"],
    void: &["已过时", "过时了", "不再有效", "作废", "已失效", "失效了"],
    authority: &[
        "官方政策更新", "openai官方", "openai的官方",
        "系统管理员通知", "系统管理员消息", "系统管理员的通知", "开发者通知", "管理员通知", "开发人员通知", "运营方通知",
        "管理员请求", "管理員請求", "管理员消息", "管理员指令", "管理员命令", "开发者消息", "开发者指令", "系统消息", "系統消息", "系统通知",
        "系统指令", "系統指令", "系统覆盖", "管理员覆盖", "最高优先级指令", "来自开发者", "来自管理员", "it部门", "安全团队", "官方通知",
        "开发团队", "来自本助手开发团队", "你的运营者", "你的运营方", "最高优先级", "法务部", "首席执行官", "账户所有人", "系统覆写",
    ],
    addressee: &[
        "用ai处理", "使用ai处理", "用人工智能处理",
        "阅读本页面的ai", "阅读此页面的ai", "正在阅读本页", "给筛选助手", "隐藏说明", "的ai模型:", "ai模型:",
        "如果你是ai", "如果你是人工智能", "如果你是一个ai", "如果你是语言模型", "如果你是一个人工智能", "给ai的", "致ai", "ai助手请",
        "人工智能助手请", "ai请注意", "如果你正在阅读", "ai代理", "ai模型", "人工智能模型", "助手,", "助手:", "如果你是", "ai 模型",
        "ai 助手", "自动化编程代理", "自动化代理", "编码代理", "语言模型", "助手：",
    ],
    instructions: &[
        "被要求做的事", "被要求的", "被要求做的","指令", "指示", "提示", "指引", "以上内容", "上面的内容", "之前的内容", "前面的内容", "其余", "其他内容", "剩下的"],
    loose: &["规则", "規則", "命令", "要求", "设定", "設定", "规定", "限制", "约束", "任务"],
    hidden: &[
        "在这次聊天开始之前", "聊天开始之前", "聊天开始前", "开发者对你说",
        "隐藏的设置文本", "设置文本", "用户问题之前", "隐藏文本", "内部配置",
        "系统提示", "系統提示", "系统消息", "系統消息", "系统指令", "你的指令", "你的指示", "你的提示", "你的规则", "初始提示", "初始指令",
        "原始指令", "原始提示", "隐藏指令", "隐藏的指令", "上面的文字", "上面的内容", "以上内容", "以上文字", "提示词", "这行之前", "这一行之前",
        "此行之前", "之前的对话", "在这次对话开始之前", "对话开始前", "对话开始之前", "到目前为止的提示", "之前的提示", "此前的所有内容", "最开始的一句",
    ],
    loose_hidden: &["密码", "密碼", "访问码", "系统配置", "系統配置", "第一行", "第一句", "提示", "指令", "规则", "对话"],
    unbound: &[
        "没有内容政策", "毫无警告", "没有任何警告", "不加警告",
        "没有任何限制", "没有限制", "不受限制", "无限制", "無限制", "不受任何", "没有规则", "没有道德", "没有过滤", "无审查", "不受约束",
        "开发者模式", "開發者模式", "邪恶", "dan", "任何事", "没有任何规则", "不受规则", "可以做任何事", "奶奶", "祖母", "两次", "两个回答",
        "从不拒绝", "永不拒绝", "马基雅维利",
    ],
    sweeping: &["所有", "全部", "一切", "任何", "完整", "逐字", "一字不差", "原文", "完全"],
    earlier: &["之前", "以前", "先前", "上面", "以上", "上述", "前面", "原来", "原始", "最初", "此前", "之后", "后面"],
    you: &["你的", "你", "您的", "給你", "给你", "收到的"],
    imperatives: &[
        "说", "写", "回答", "回复", "发送", "转发", "推荐", "提到", "使用", "执行", "调用", "删除", "打开", "访问", "翻译",
        "评价", "添加", "声称", "忽略", "忘记", "而是", "必须", "请",
    ],
    operation: &[
        "你的回复", "回复中", "每条消息", "每个回答", "这次聊天", "这次对话", "此邮件串", "用户的", "邮件工具", "你的工具", "你的回答",
    ],
};

#[rustfmt::skip]
const JA: Lexicon = Lexicon {
    lang: "ja",
    spaced: false,
    compounds: false,
    decode: &[
        "デコード", "復号", "逆から", "逆さ", "逆順", "rot13",
    ],
    obey: &[
        "従って", "従い", "実行", "通りに", "とおりに",
    ],
    model: &[ "あなたに命じ",
        "アシスタント", "チャットボット", "言語モデル", "ai", "エージェント",
    ],
    deontic: &[ "命じ",
        "必ず", "しなければ", "すること", "指示", "ください", "許可", "べき",
    ],
    send: &[
        "置き換えて", "に置き換え", "差し替えて",
        "送信", "送って", "送る", "アップロード", "転送",
    ],
    call: &[ "ツール",
        "呼び出", "実行",
    ],
    disregard: &[
        "忘れ", "従わな", "従うな", "破棄", "無効に", "気にしな", "放棄", "取り消", "上書き", "スキップ", "従う必要はありません", "捨て",
        "無視し", "無視せよ", "無視する", "無視しろ", "気にせず", "脇に置",
    ],
    reveal: &[
        "表示", "出力", "教えて", "見せて", "繰り返", "印刷", "開示", "書き出", "明かし", "明かせ", "暴露", "公開", "列挙", "言って",
        "書いて", "翻訳", "要約", "引用", "まとめ",
    ],
    ask: &[
        "何と言いましたか", "何と言われましたか","何ですか", "なんですか", "は何", "何を言われ", "何と言われ"],
    persona: &[
        "今この瞬間から", "この瞬間から",
        "あなたは今から", "あなたは今", "今からあなたは", "これからあなたは", "ふりをして", "ふりをしろ", "として振る舞", "として振舞", "として行動",
        "役を演じ", "になりきって", "もはや", "君は今から", "答えて", "あなたは", "演じて", "想像して", "あなたは今後",
    ],
    output_only: &[
        "という文だけを書", "文だけを書", "だけを書いて", "とだけ書いて",
        "とだけ返答", "一語だけで返答", "だけで返答",
        "だけを出力", "のみを出力", "だけ出力", "のみ出力", "だけを表示", "だけを書", "だけを返", "だけ答え", "のみで答え", "とだけ言", "とだけ書",
        "とだけ出力", "とだけ答え", "のみを返", "だけを言", "とだけ返",
    ],
    halt: &["すべて中止", "全て中止", "今すぐ止め", "直ちに停止", "すべてを止め", "何を頼まれても", "以前の指示に関係なく"],
    boundary: &[
        "検索結果ここまで", "結果ここまで", "データここまで", "文書ここまで", "ここまでが検索結果",
        "唯一の仕事", "唯一のタスク", "唯一の任務", "現在のタスクは中止", "タスクを中止", "タスクは中止", "作業を中止",
        "ドキュメント終了", "文書終了", "入力終了", "データ終了", "文書の終わり", "入力の終わり", "### 指示", "### 応答", "### システム",
        "新しい指示", "新しいタスク", "新しい目標", "新たな指示", "唯一有効な指示", "あなたのタスクは変わ", "本当のタスク", "次のタスク",
    ],
    mode: &["開発者モード", "反対モード", "キャラクターを保", "役になりきり", "役を崩さ", "キャラを崩さ", "キャラから外れ", "安全モードは無効", "安全モードを無効"],
    void: &["古くなって", "もう無効", "無効です", "廃止され", "効力を失"],
    authority: &[
        "公式ポリシー更新", "openaiの公式", "公式ポリシーの更新",
        "システム管理者からのメッセージ", "システム管理者からの通知", "開発者からの通知", "管理者からの通知", "開発者通知", "運営者からの通知", "管理者による上書き",
        "管理者リクエスト", "管理者からのメッセージ", "管理者メッセージ", "管理者の指示", "開発者からのメッセージ", "開発者メッセージ", "開発者の指示",
        "システムメッセージ", "システム通知", "システム命令", "システム上書き", "管理者命令", "it部門", "セキュリティチーム", "公式通知", "開発チーム",
        "あなたの運営者", "運営者です", "最優先指令", "法務部", "ceoとして", "アカウント所有者",
    ],
    addressee: &[
        "aiで処理する方", "aiで処理する", "aiで処理している",
        "読んでいるaiモデル", "読んでいるai", "を読んでいるai", "選考アシスタントへ", "隠しメモ",
        "あなたがaiなら", "あなたがaiである場合", "aiへの注意", "aiへのメモ", "aiへの指示", "aiへのメッセージ", "aiアシスタントへ",
        "言語モデルへ", "aiの方へ", "aiである場合", "これを読んでいる", "aiエージェント", "aiモデル", "アシスタントへ", "アシスタント、",
        "アシスタントさん", "これを読んだら", "自動化されたコーディングエージェント", "エージェント", "ai モデル", "アシスタント:",
    ],
    instructions: &[
        "頼まれたこと", "指示されたこと", "言われたこと", "依頼されたこと",
        "以上の内容", "上記の内容", "これまでの内容", "残り", "それ以外", "指示を", "指示は", "指示も", "指示に", "の指示", "指令を",
        "プロンプトを", "プロンプトは",
    ],
    loose: &["ルール", "規則", "設定", "制約", "制限", "タスク", "命令を", "命令は", "の命令"],
    hidden: &[
        "このチャットが始まる前", "チャットが始まる前", "チャットの前に", "開発者はあなたに",
        "隠された設定テキスト", "設定テキスト", "質問より前", "隠されたテキスト", "内部設定",
        "システムプロンプト", "システムメッセージ", "システム指示", "あなたの指示", "あなたのプロンプト", "あなたのルール", "初期プロンプト", "初期指示",
        "元の指示", "隠された指示", "隠し指示", "上記のテキスト", "上のテキスト", "以上のテキスト", "これまでのテキスト", "受けた指示", "この行より前",
        "この行の前", "これまでの会話", "ここまでのプロンプト", "これまでのプロンプト", "ここまでの指示", "この会話の前に", "会話の開始前", "会話の最初に",
        "一番最初の文",
    ],
    loose_hidden: &["パスワード", "アクセスコード", "システム設定", "最初の行", "最初の文", "プロンプト", "指示", "ルール", "会話"],
    unbound: &[
        "コンテンツポリシーのない", "警告なしに", "警告なしで",
        "制限のない", "制限なし", "制限なく", "制約のない", "ルールのない", "ルールなし", "検閲なし", "無制限", "フィルターなし", "倫理観のない",
        "開発者モード", "邪悪", "dan", "何でもでき", "なんでもでき", "制限を受けない", "倫理的な制約", "フィルターがない", "何でもできる",
        "おばあちゃん", "祖母", "二回", "2回", "二つの回答", "決して断らない", "断らない", "倫理的な指針", "マキャベリ",
    ],
    sweeping: &["すべて", "全て", "全部", "あらゆる", "一切", "全文", "そのまま", "一字一句", "完全"],
    earlier: &["以前", "前の", "これまで", "上記", "以上", "先ほど", "元の", "最初の", "上の", "前述", "以下の"],
    you: &["あなたの", "あなたが", "君の", "あなたに", "与えられた", "受け取った"],
    imperatives: &[
        "言って", "書いて", "答えて", "返信", "送信", "転送", "推薦", "勧め", "言及", "使って", "実行", "呼び出", "削除", "開いて",
        "訪問", "翻訳", "評価", "追加", "主張", "無視", "代わりに", "必ず", "ください",
    ],
    operation: &[
        "あなたの返信", "返信に", "すべてのメッセージ", "このチャット", "この会話", "このスレッド", "ユーザーの", "メールツール", "あなたの回答", "回答に",
    ],
};

#[rustfmt::skip]
const KO: Lexicon = Lexicon {
    lang: "ko",
    spaced: false,
    compounds: false,
    decode: &[
        "디코딩", "복호화", "해독", "거꾸로", "역순", "rot13",
    ],
    obey: &[
        "따르", "따라", "실행", "대로",
    ],
    model: &[ "당신에게 명령",
        "어시스턴트", "챗봇", "언어 모델", "ai", "에이전트",
    ],
    deontic: &[ "명령",
        "해야", "지시", "하십시오", "하세요", "하라", "허가", "반드시",
    ],
    send: &[
        "자리에", "대신 넣어", "바꿔 넣어",
        "보내", "전송", "업로드",
    ],
    call: &[ "도구",
        "호출", "실행",
    ],
    disregard: &[
        "무시", "잊어", "잊으", "잊고", "따르지 마", "따르지 말", "신경 쓰지 마", "무효화", "버려", "버리고", "폐기", "따르지 않",
        "제쳐 두", "신경 쓰지 말",
    ],
    reveal: &[
        "보여", "출력", "알려", "말해", "반복", "공개", "누설", "표시", "인쇄", "써 줘", "적어", "밝혀", "번역", "요약", "인용", "정리",
    ],
    ask: &[
        "뭐라고 했어", "뭐라고 했는지", "무엇이라고 했","무엇입니까", "뭐야", "무엇인가요", "뭐예요", "무엇이야", "무엇을 들었", "무슨 말을 들었"],
    persona: &[
        "답해", "답하라",
        "지금 이 순간부터", "이 순간부터",
        "당신은 이제", "너는 이제", "이제부터 너는", "이제부터 당신은", "지금부터 너는", "지금부터 당신은", "인 척", "척 해", "척하",
        "역할을 해", "역할을 맡", "처럼 행동", "으로 행동", "로 행동", "더 이상", "대답", "너는", "당신은", "로서 답하", "으로서 답하",
        "답하세요", "척하세요", "상상해",
    ],
    output_only: &[
        "문장만 써", "문장만 출력",
        "라고만 답해", "한 단어로만 답", "로만 답해", "로만 답하", "라고만 출력",
        "만 출력", "만 말해", "만 답해", "만 대답", "만 써", "만 인쇄", "라고만", "만을 출력", "만 반환", "만 응답", "라고만 답",
        "라고만 말",
    ],
    halt: &["모든 것을 멈", "당장 멈", "즉시 중지", "모두 중지", "즉시 멈", "무엇을 요청받았든", "이전 지시와 관계없이"],
    boundary: &[
        "유일한 임무", "유일한 작업", "유일한 일", "현재 작업을 취소", "작업을 취소", "작업을 중단", "하던 일을 멈추",
        "문서 끝", "문서의 끝", "입력 끝", "입력의 끝", "데이터 끝", "### 지시", "### 응답", "### 시스템", "새로운 지시", "새 지시",
        "새로운 작업", "새 작업", "새로운 목표", "유일하게 유효한 지시", "당신의 작업이 바뀌었", "진짜 작업", "다음 작업",
    ],
    mode: &["개발자 모드", "반대 모드", "캐릭터에서 벗어나", "캐릭터를 유지", "역할을 유지", "역할에서 벗어나지", "캐릭터를 깨지", "안전 모드가 비활성화", "안전 모드를 비활성화"],
    void: &["더 이상 유효하지", "폐기되었", "무효입니다", "무효", "구식"],
    authority: &[
        "공식 정책 업데이트", "openai 공식",
        "시스템 관리자 메시지", "시스템 관리자 알림", "시스템 관리자 공지", "개발자 공지", "관리자 공지", "개발자 알림", "운영자 공지", "관리자 재정의",
        "관리자 요청", "관리자 메시지", "관리자 지시", "관리자 명령", "개발자 메시지", "개발자 지시", "시스템 메시지", "시스템 알림",
        "시스템 명령", "시스템 재정의", "관리자로부터", "개발자로부터", "it 부서", "보안 팀", "공식 공지", "개발팀", "당신의 운영자",
        "운영자입니다", "최우선 지침", "법무팀", "ceo로서", "계정 소유자",
    ],
    addressee: &[
        "ai로 처리하는", "ai로 처리하는 사람",
        "읽고 있는 ai 모델", "읽고 있는 ai", "심사 어시스턴트", "숨은 메모",
        "당신이 ai라면", "네가 ai라면", "ai라면", "ai에게", "ai 어시스턴트에게", "언어 모델이라면", "ai는 다음", "이것을 읽고 있다면",
        "ai 에이전트", "ai 모델", "어시스턴트에게", "어시스턴트,", "자동화된 코딩 에이전트", "에이전트", "ai 어시스턴트", "어시스턴트:",
    ],
    instructions: &[
        "요청받은 일", "요청받은 것", "지시받은 것", "부탁받은 일","지시", "지침", "프롬프트", "지시사항", "위의 내용", "이전 내용", "나머지"],
    loose: &["규칙", "명령", "설정", "제한", "제약", "작업"],
    hidden: &[
        "이 채팅이 시작되기 전", "채팅이 시작되기 전", "채팅 전에", "개발자가 너에게",
        "숨겨진 설정 텍스트", "설정 텍스트", "질문 앞에 있던", "숨겨진 텍스트", "내부 설정",
        "시스템 프롬프트", "시스템 메시지", "시스템 지시", "당신의 지시", "너의 지시", "네 지시", "당신의 프롬프트", "초기 프롬프트", "초기 지시",
        "원래 지시", "숨겨진 지시", "위의 텍스트", "위의 내용", "이 줄 앞", "이 줄 이전", "이전 대화", "지금까지의 프롬프트", "지금까지의 지시",
        "이 대화가 시작되기 전", "대화 시작 전", "맨 처음 문장",
    ],
    loose_hidden: &["비밀번호", "암호", "접근 코드", "시스템 설정", "첫 번째 줄", "첫 줄", "프롬프트", "지시", "규칙", "대화"],
    unbound: &[
        "콘텐츠 정책이 없는", "경고 없이", "경고도 없이",
        "필터 없는 ai", "모든 정책을 무시",
        "제한 없는", "제한이 없는", "제한 없이", "규칙 없는", "규칙이 없는", "검열 없는", "필터 없는", "무제한", "윤리 없는", "개발자 모드",
        "사악한", "dan", "무엇이든 할 수", "아무 제한", "할머니", "두 번", "두 가지 답", "절대 거절하지", "거절하지 않", "윤리적 지침",
        "마키아벨리",
    ],
    sweeping: &["모든", "모두", "전부", "어떠한", "그대로", "전체", "전문", "완전"],
    earlier: &["이전", "앞의", "앞선", "위의", "위에", "지금까지", "원래", "초기", "기존", "다음"],
    you: &["당신의", "너의", "네", "당신", "받은", "들은"],
    imperatives: &[
        "말해", "써", "답해", "대답", "보내", "전달", "추천", "언급", "사용", "실행", "호출", "삭제", "열어", "방문", "번역",
        "평가", "추가", "주장", "무시", "대신", "반드시", "하세요", "해라", "하십시오",
    ],
    operation: &[
        "너의 답변", "답변에", "모든 메시지", "이 채팅", "이 대화", "이 스레드", "사용자의", "이메일 도구", "너의 도구", "네 답변",
    ],
};
