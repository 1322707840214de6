//! ASCII transliteration for SAM, whose 1982 reciter knows only ASCII: a name such as
//! "Åsa Øberg" or "Łukasz Müller" is spoken as "Aasa Oeberg", "Lukasz Mueller" instead of
//! the reciter folding its UTF-8 bytes into noise. Pure ASCII text passes through unchanged
//! (so SAM's reference vectors still hold), and a character with no sensible spelling (CJK,
//! emoji) becomes a space, so it is skipped rather than mispronounced.

use alloc::string::String;

/// The ASCII spelling of a non-ASCII `c`, or `None` when there is none.
pub fn ascii_for(c: char) -> Option<&'static str> {
    let s = match c {
        'À' | 'Á' | 'Â' | 'Ã' | 'Ā' | 'Ă' | 'Ą' => "A",
        'à' | 'á' | 'â' | 'ã' | 'ā' | 'ă' | 'ą' | 'ª' => "a",
        'Ä' | 'Æ' => "Ae",
        'ä' | 'æ' => "ae",
        'Å' => "Aa",
        'å' => "aa",
        'Ç' | 'Ć' | 'Ĉ' | 'Ċ' => "C",
        'ç' | 'ć' | 'ĉ' | 'ċ' => "c",
        'Č' => "Ch",
        'č' => "ch",
        'Ď' | 'Đ' | 'Ð' => "D",
        'ď' | 'đ' | 'ð' => "d",
        'È' | 'É' | 'Ê' | 'Ë' | 'Ē' | 'Ĕ' | 'Ė' | 'Ę' | 'Ě' => "E",
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ĕ' | 'ė' | 'ę' | 'ě' => "e",
        'Ĝ' | 'Ğ' | 'Ġ' | 'Ģ' => "G",
        'ĝ' | 'ğ' | 'ġ' | 'ģ' => "g",
        'Ĥ' | 'Ħ' => "H",
        'ĥ' | 'ħ' => "h",
        'Ì' | 'Í' | 'Î' | 'Ï' | 'Ĩ' | 'Ī' | 'Ĭ' | 'Į' | 'İ' => "I",
        'ì' | 'í' | 'î' | 'ï' | 'ĩ' | 'ī' | 'ĭ' | 'į' | 'ı' => "i",
        'Ĵ' => "J",
        'ĵ' => "j",
        'Ķ' => "K",
        'ķ' => "k",
        'Ĺ' | 'Ļ' | 'Ľ' | 'Ŀ' | 'Ł' => "L",
        'ĺ' | 'ļ' | 'ľ' | 'ŀ' | 'ł' => "l",
        'Ñ' | 'Ń' | 'Ņ' | 'Ň' => "N",
        'ñ' | 'ń' | 'ņ' | 'ň' => "n",
        'Ò' | 'Ó' | 'Ô' | 'Õ' | 'Ō' | 'Ŏ' | 'Ő' => "O",
        'ò' | 'ó' | 'ô' | 'õ' | 'ō' | 'ŏ' | 'ő' | 'º' => "o",
        'Ö' | 'Ø' | 'Œ' => "Oe",
        'ö' | 'ø' | 'œ' => "oe",
        'Ŕ' | 'Ŗ' | 'Ř' => "R",
        'ŕ' | 'ŗ' | 'ř' => "r",
        'Ś' | 'Ŝ' | 'Ş' | 'Ș' => "S",
        'ś' | 'ŝ' | 'ş' | 'ș' => "s",
        'Š' => "Sh",
        'š' => "sh",
        'ß' => "ss",
        'Ţ' | 'Ť' | 'Ŧ' | 'Ț' => "T",
        'ţ' | 'ť' | 'ŧ' | 'ț' => "t",
        'Þ' => "Th",
        'þ' => "th",
        'Ù' | 'Ú' | 'Û' | 'Ũ' | 'Ū' | 'Ŭ' | 'Ů' | 'Ű' | 'Ų' => "U",
        'ù' | 'ú' | 'û' | 'ũ' | 'ū' | 'ŭ' | 'ů' | 'ű' | 'ų' => "u",
        'Ü' => "Ue",
        'ü' => "ue",
        'Ŵ' => "W",
        'ŵ' => "w",
        'Ý' | 'Ŷ' | 'Ÿ' => "Y",
        'ý' | 'ŷ' | 'ÿ' => "y",
        'Ź' | 'Ż' => "Z",
        'ź' | 'ż' => "z",
        'Ž' => "Zh",
        'ž' => "zh",
        // Cyrillic, the common Russian/Ukrainian letters.
        'А' => "A",
        'а' => "a",
        'Б' => "B",
        'б' => "b",
        'В' => "V",
        'в' => "v",
        'Г' | 'Ґ' => "G",
        'г' | 'ґ' => "g",
        'Д' => "D",
        'д' => "d",
        'Е' | 'Э' | 'Є' => "E",
        'е' | 'э' | 'є' => "e",
        'Ё' => "Yo",
        'ё' => "yo",
        'Ж' => "Zh",
        'ж' => "zh",
        'З' => "Z",
        'з' => "z",
        'И' | 'І' => "I",
        'и' | 'і' => "i",
        'Й' => "Y",
        'й' => "y",
        'Ї' => "Yi",
        'ї' => "yi",
        'К' => "K",
        'к' => "k",
        'Л' => "L",
        'л' => "l",
        'М' => "M",
        'м' => "m",
        'Н' => "N",
        'н' => "n",
        'О' => "O",
        'о' => "o",
        'П' => "P",
        'п' => "p",
        'Р' => "R",
        'р' => "r",
        'С' => "S",
        'с' => "s",
        'Т' => "T",
        'т' => "t",
        'У' => "U",
        'у' => "u",
        'Ф' => "F",
        'ф' => "f",
        'Х' => "Kh",
        'х' => "kh",
        'Ц' => "Ts",
        'ц' => "ts",
        'Ч' => "Ch",
        'ч' => "ch",
        'Ш' => "Sh",
        'ш' => "sh",
        'Щ' => "Shch",
        'щ' => "shch",
        'Ы' => "Y",
        'ы' => "y",
        'Ю' => "Yu",
        'ю' => "yu",
        'Я' => "Ya",
        'я' => "ya",
        'Ъ' | 'ъ' | 'Ь' | 'ь' => "",
        // Typography.
        '\u{2018}' | '\u{2019}' | '\u{02BC}' => "'",
        '\u{201C}' | '\u{201D}' | '«' | '»' => "\"",
        '\u{2013}' | '\u{2014}' | '\u{2212}' => "-",
        '\u{2026}' => "...",
        '\u{00A0}' | '\u{2009}' | '\u{202F}' => " ",
        '€' => " euro",
        '£' => " pounds",
        '°' => " degrees",
        _ => return None,
    };
    Some(s)
}

/// Whether SAM can say `c` after transliteration.
pub fn speakable(c: char) -> bool {
    c.is_ascii() || ascii_for(c).is_some()
}

/// `text` in ASCII for SAM: letters it lacks spelled out, characters with no spelling turned
/// into spaces. ASCII input comes back unchanged.
pub fn transliterate(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            out.push_str(ascii_for(c).unwrap_or(" "));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_other_scripts_become_sensible_ascii() {
        assert_eq!(transliterate("Åsa Øberg"), "Aasa Oeberg");
        assert_eq!(transliterate("Łukasz Müller"), "Lukasz Mueller");
        assert_eq!(transliterate("José Niño, Straße"), "Jose Nino, Strasse");
        assert_eq!(transliterate("Наталья"), "Natalya");
        assert_eq!(
            transliterate("It’s “fine” – really…"),
            "It's \"fine\" - really..."
        );
    }

    #[test]
    fn ascii_is_unchanged_and_unknown_becomes_space() {
        let ascii: alloc::string::String = (0u8..128).map(char::from).collect();
        assert_eq!(transliterate(&ascii), ascii);
        assert_eq!(transliterate("Lei 李雷!"), "Lei   !");
        assert!(!speakable('李') && speakable('é') && speakable('a'));
    }
}
