"""Scrub patterns: the bounded, anchored regular expressions and word lists `pipeline.scrub`
reads mail text with (signature delimiters and sign-offs, device lines, reply attributions in
many languages, inline header blocks and their labels). In: nothing. Out: compiled patterns.
"""

from __future__ import annotations

import re

#: Unicode spaces (NBSP from HTML mail, thin and ideographic spaces), read as a space.
SPACES = str.maketrans(
    dict.fromkeys(
        "\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
        "\u2006\u2007\u2008\u2009\u200a\u202f\u205f\u3000",
        " ",
    )
    | {"\u200b": "", "\ufeff": ""}
)
DELIMITER = re.compile(r"-- ?[ \t]*")
DEVICE = re.compile(
    r"(?:sent from my \S.{0,40}|sent from (?:mail|outlook|yahoo mail|gmail)\b.{0,60}"
    r"|get outlook for (?:ios|android).{0,20}|sent from (?:the )?\S+ app.{0,30}"
    r"|von meinem \S.{0,30} gesendet|envoy[ée] de mon \S.{0,30}|enviado desde mi \S.{0,30}"
    r"|verzonden (?:met|vanaf) mijn \S.{0,30}|anfonwyd o fy \S.{0,30})",
    re.I,
)
SALUTATIONS = (
    r"thanks(?: again| so much| very much| in advance)?|thank you(?: so much| very much)?"
    r"|many thanks|with thanks|best|best wishes|best regards|kind regards|warm regards"
    r"|warmest regards|regards|all the best|cheers|yours sincerely|yours faithfully|sincerely"
    r"|yours|take care|thanks and regards|mit freundlichen gr(?:ü|ue)(?:ß|ss)en"
    r"|viele gr(?:ü|ue)(?:ß|ss)e|liebe gr(?:ü|ue)(?:ß|ss)e|cordialement|bien (?:à|a) vous"
    r"|saludos|un saludo|atentamente"
    r"|met vriendelijke groet(?:en)?|groeten|diolch(?: yn fawr)?|cofion(?: cynnes)?"
    r"|cordiali saluti|distinti saluti|saluti|un saluto|atenciosamente|cumprimentos|abra[çc]os"
    r"|love(?: from)?|lots of love|much love|thx|ty|ta|speak soon|talk soon|see you soon"
    r"|thanks a lot|rgds|med v[äa]nliga? h[äa]lsningar?|h[äa]lsningar|med venlig hilsen"
    r"|med vennlig hilsen|hilsen|mvh|pozdrawiam|z powa[żz]aniem|с уважением|спасибо"
    r"|よろしくお願いします|宜しくお願いします|谢谢|謝謝|此致|saygılarımla|iyi çalışmalar"
)
KISSES = r"(?:[ \t]+x{1,4})?"
SALUTATION = re.compile(rf"[ \t]*(?:{SALUTATIONS}){KISSES}[ \t]*[,.!]?{KISSES}[ \t]*", re.I)
SALUTATION_NAME = re.compile(
    rf"(?P<keep>[ \t]*(?:{SALUTATIONS}){KISSES}[ \t]*[,.!-]?)[ \t]*"
    r"(?P<name>[A-Z][\w'.-]{0,30}(?:[ \t]+[A-Z][\w'.-]{0,30}){0,3})[ \t]*",
    re.I,
)
PHONE = re.compile(r"(?:(?:tel|phone|mobile|mob|m|t)\.?:?[ \t]*)?\+?\d[\d ()./-]{6,}\d", re.I)
CAPITALISED_NAME = re.compile(r"[A-Z][\w'.-]{0,30}(?:[ \t]+[A-Z][\w'.-]{0,30}){0,3}")
CONTACT = re.compile(
    r"@|https?://|www\.|\+?\d[\d ()./-]{6,}\d|\b(?:tel|phone|mobile|mob|ext|email|e-mail)\b"
    r"|\((?:she|he|they|ze|xe)/\w+\)|\b(?:student|university|college|department|school|faculty)\b",
    re.I,
)

# Reply attributions, each anchored and bounded: the opening word, up to 400 characters, the
# closing words. Joined over up to three wrapped lines.
ATTRIBUTION = re.compile(
    r"[ \t>]*(?:"
    r"on\s.{1,400}?\swrote\s?:"
    r"|am\s.{1,400}?\sschrieb\s?.{0,300}:"
    r"|le\s.{1,400}?\sa\s[ée]crit\s?:"
    r"|el\s.{1,400}?\sescribi[óo]\s?:"
    r"|il\s.{1,400}?\sha\sscritto\s?:"
    r"|em\s.{1,400}?\sescreveu\s?:"
    r"|ar\s.{1,400}?\sysgrifennodd\s?.{0,300}:"
    r"|op\s.{1,400}?\s(?:schreef\s?.{0,300}|het\svolgende\sgeschreven)\s?:"
    r"|in\sdata\s.{1,400}?\sha\sscritto\s?:"
    r"|w\sdniu\s.{1,400}?\s(?:napisał(?:\(a\)|a)?|pisze)\s?:"
    # the forms without a fixed opening word carry a date or an address
    r"|(?=[^\n]{0,400}[\d@])(?:"
    r".{1,400}?\sskrev\s.{1,300}?:"
    r"|.{1,400}?\s(?:napisał(?:\(a\)|a)?|pisze|пишет|написал(?:\(а\)|а)?)\s?:"
    r"|.{1,400}?\starihinde\s.{1,400}?\sşunu\syazdı\s?:"
    r"|.{1,400}?\s(?:ha\sscritto|escreveu|escribi[óo])\s?:"
    r"|.{1,400}?(?:のメッセージ|のメール|は書きました|写道|寫道)\s?[:：]"
    r")"
    r"|-{2,}\s*(?:original message|urspr(?:ü|ue)ngliche nachricht|message d'origine"
    r"|mensaje original|oorspronkelijk bericht|messaggio originale|neges wreiddiol"
    r"|mensagem original|ursprungligt meddelande|oprindelig meddelelse|opprinnelig melding"
    r"|oryginalna wiadomość|исходное сообщение|元のメッセージ|原始邮件|原始郵件"
    r"|orijinal mesaj|özgün ileti)\s*-{2,}"
    r")[ \t]*",
    re.I | re.S,
)
#: A mail address anywhere in a line (the generic, language-independent attribution test).
ADDRESS = re.compile(r"[\w.+-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63}){1,8}")
#: "Sam Student wrote on 2 Mar 2026, at 10:00:" (Outlook for Mac, some webmail).
WROTE_ON = re.compile(r"[ \t>]*.{1,200}?\swrote\son\s(?=[^\n]{0,300}\d).{1,300}?[:：][ \t]*", re.I)
ATTRIBUTION_START = re.compile(r"[ \t>]*(?:on|am|le|el|il|em|ar|op|den|w|in)\s", re.I)
ATTRIBUTION_LINES = 4  # an attribution wrapped over this many lines at most

# Inline header blocks of quoted or forwarded messages.
FORWARD_MARKER = re.compile(
    r"[ \t]*(?:-{5,}[^-\n]{3,60}-{5,}|_{10,}|begin forwarded message\s?:"
    r"|d[ée]but du message r[ée]exp[ée]di[ée]\s?:|anfang der weitergeleiteten nachricht\s?:"
    r"|inicio del mensaje reenviado\s?:|begin doorgestuurd bericht\s?:)[ \t]*",
    re.I,
)
LABEL = re.compile(
    r"[ \t>]*\*{0,2}(?P<label>[^\W\d_][\w' -]{0,20}?)\*{0,2}[ \t]*:\*{0,2}(?:[ \t]|\r?$)"
)
FROM_LABELS = {"from", "von", "de", "van", "da", "oddi wrth", "gan"}
DATE_LABELS = {
    "sent", "date", "gesendet", "datum", "envoyé", "envoye", "enviado", "fecha",
    "verzonden", "inviato", "data", "anfonwyd", "dyddiad", "subject", "betreff", "objet",
    "asunto", "onderwerp", "oggetto", "pwnc", "to", "an", "à", "a", "para", "aan", "at",
}  # fmt: skip
RECIPIENT_LABELS = {
    "to", "cc", "bcc", "reply-to", "an", "kopie", "à", "a", "para", "aan", "at", "copie",
    "cco", "cci", "copia", "cc/bcc",
}  # fmt: skip
BLOCK_LABELS = FROM_LABELS | DATE_LABELS | RECIPIENT_LABELS | {"cc"}
