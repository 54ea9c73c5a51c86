//! Countries and macro-regions. Every officially assigned ISO 3166-1 alpha-2
//! code (249 of them) maps to exactly one of eight [`MacroRegion`]s through a
//! sorted static table searched with binary search. Pure: no I/O, and no
//! panics on any input, including a [`CountryCode`] built from raw bytes.

use core::fmt;
use serde::{Deserialize, Serialize};

/// An ISO 3166-1 alpha-2 country code, upper-case ASCII, e.g. `*b"DE"`.
///
/// The field is public so a code can be rebuilt from decoded bytes; such a
/// value is not checked, which is why [`CountryCode::macro_region`] returns an
/// `Option`. Use [`CountryCode::parse`] for text from outside.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CountryCode(pub [u8; 2]);

// Two bytes in the codec; "DE" in JSON and TOML, checked on the way in.
impl Serialize for CountryCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(self.as_str())
        } else {
            crate::serde_hr::ser_bytes::<S, 2>(&self.0, s)
        }
    }
}

impl<'de> Deserialize<'de> for CountryCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<CountryCode, D::Error> {
        if d.is_human_readable() {
            let text = String::deserialize(d)?;
            CountryCode::parse(&text).map_err(serde::de::Error::custom)
        } else {
            crate::serde_hr::de_bytes::<D, 2>(d, "a country code").map(CountryCode)
        }
    }
}

/// One of eight coarse world regions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum MacroRegion {
    NorthAmerica = 0,
    LatinAmerica = 1,
    Europe = 2,
    Africa = 3,
    MiddleEast = 4,
    SouthAsia = 5,
    EastAsia = 6,
    Oceania = 7,
}

impl MacroRegion {
    /// Every region, in discriminant order (`ALL[r.index()] == r`).
    pub const ALL: [MacroRegion; 8] = [
        MacroRegion::NorthAmerica,
        MacroRegion::LatinAmerica,
        MacroRegion::Europe,
        MacroRegion::Africa,
        MacroRegion::MiddleEast,
        MacroRegion::SouthAsia,
        MacroRegion::EastAsia,
        MacroRegion::Oceania,
    ];

    /// The number of regions.
    pub const COUNT: usize = 8;

    /// The discriminant, `0..COUNT`.
    pub fn index(self) -> usize {
        self as u8 as usize
    }

    /// The kebab-case name, e.g. `"north-america"`.
    pub fn name(self) -> &'static str {
        match self {
            MacroRegion::NorthAmerica => "north-america",
            MacroRegion::LatinAmerica => "latin-america",
            MacroRegion::Europe => "europe",
            MacroRegion::Africa => "africa",
            MacroRegion::MiddleEast => "middle-east",
            MacroRegion::SouthAsia => "south-asia",
            MacroRegion::EastAsia => "east-asia",
            MacroRegion::Oceania => "oceania",
        }
    }

    /// The inverse of [`MacroRegion::name`], ignoring ASCII case.
    pub fn from_name(s: &str) -> Option<MacroRegion> {
        MacroRegion::ALL
            .into_iter()
            .find(|r| r.name().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for MacroRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Errors from parsing a country code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegionError {
    #[error("{0:?} is not an ISO 3166-1 alpha-2 country code (two letters, e.g. DE or US)")]
    NotACountryCode(String),
}

impl CountryCode {
    /// Parses "de" or "DE" (trimmed); refuses anything that is not an
    /// officially assigned alpha-2 code. The error carries the input as given.
    pub fn parse(s: &str) -> Result<CountryCode, RegionError> {
        let refuse = || RegionError::NotACountryCode(s.to_string());
        let code = match s.trim().as_bytes() {
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                CountryCode([a.to_ascii_uppercase(), b.to_ascii_uppercase()])
            }
            _ => return Err(refuse()),
        };
        match code.macro_region() {
            Some(_) => Ok(code),
            None => Err(refuse()),
        }
    }

    /// The code as text, e.g. `"DE"`. Never panics: if either byte is not an
    /// ASCII letter the result is `"??"`.
    pub fn as_str(&self) -> &str {
        if self.0.iter().all(u8::is_ascii_alphabetic) {
            core::str::from_utf8(&self.0).unwrap_or("??")
        } else {
            "??"
        }
    }

    /// The macro-region of an assigned code; `None` for anything else,
    /// including lower-case bytes (a valid `CountryCode` is upper-case).
    pub fn macro_region(&self) -> Option<MacroRegion> {
        TABLE
            .binary_search_by(|(code, _)| code.cmp(&self.0))
            .ok()
            .and_then(|i| TABLE.get(i))
            .map(|&(_, region)| region)
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for CountryCode {
    /// `CountryCode(DE)`; bytes that are not letters are shown in hex,
    /// e.g. `CountryCode([ff, 00])`, so bad data stays visible.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.iter().all(u8::is_ascii_alphabetic) {
            write!(f, "CountryCode({})", self.as_str())
        } else {
            write!(f, "CountryCode([{:02x}, {:02x}])", self.0[0], self.0[1])
        }
    }
}

/// The number of officially assigned ISO 3166-1 alpha-2 codes.
const ASSIGNED: usize = 249;

/// Every officially assigned ISO 3166-1 alpha-2 code, sorted by code, with
/// its macro-region. Judgement calls: TR and EG are Middle East; RU, the
/// Caucasus (GE, AM, AZ) and CY are Europe; GL, BM and PM are North America;
/// IO and Central Asia are South Asia; AQ, BV, HM, TF, UM, CC and CX are
/// Oceania; FK and GS are Latin America.
const TABLE: &[([u8; 2], MacroRegion)] = {
    use MacroRegion::*;
    &[
        (*b"AD", Europe),       // Andorra
        (*b"AE", MiddleEast),   // United Arab Emirates
        (*b"AF", SouthAsia),    // Afghanistan
        (*b"AG", LatinAmerica), // Antigua and Barbuda
        (*b"AI", LatinAmerica), // Anguilla
        (*b"AL", Europe),       // Albania
        (*b"AM", Europe),       // Armenia
        (*b"AO", Africa),       // Angola
        (*b"AQ", Oceania),      // Antarctica
        (*b"AR", LatinAmerica), // Argentina
        (*b"AS", Oceania),      // American Samoa
        (*b"AT", Europe),       // Austria
        (*b"AU", Oceania),      // Australia
        (*b"AW", LatinAmerica), // Aruba
        (*b"AX", Europe),       // Åland Islands
        (*b"AZ", Europe),       // Azerbaijan
        (*b"BA", Europe),       // Bosnia and Herzegovina
        (*b"BB", LatinAmerica), // Barbados
        (*b"BD", SouthAsia),    // Bangladesh
        (*b"BE", Europe),       // Belgium
        (*b"BF", Africa),       // Burkina Faso
        (*b"BG", Europe),       // Bulgaria
        (*b"BH", MiddleEast),   // Bahrain
        (*b"BI", Africa),       // Burundi
        (*b"BJ", Africa),       // Benin
        (*b"BL", LatinAmerica), // Saint Barthélemy
        (*b"BM", NorthAmerica), // Bermuda
        (*b"BN", EastAsia),     // Brunei Darussalam
        (*b"BO", LatinAmerica), // Bolivia
        (*b"BQ", LatinAmerica), // Bonaire, Sint Eustatius and Saba
        (*b"BR", LatinAmerica), // Brazil
        (*b"BS", LatinAmerica), // Bahamas
        (*b"BT", SouthAsia),    // Bhutan
        (*b"BV", Oceania),      // Bouvet Island
        (*b"BW", Africa),       // Botswana
        (*b"BY", Europe),       // Belarus
        (*b"BZ", LatinAmerica), // Belize
        (*b"CA", NorthAmerica), // Canada
        (*b"CC", Oceania),      // Cocos (Keeling) Islands
        (*b"CD", Africa),       // Congo, Democratic Republic of the
        (*b"CF", Africa),       // Central African Republic
        (*b"CG", Africa),       // Congo
        (*b"CH", Europe),       // Switzerland
        (*b"CI", Africa),       // Côte d'Ivoire
        (*b"CK", Oceania),      // Cook Islands
        (*b"CL", LatinAmerica), // Chile
        (*b"CM", Africa),       // Cameroon
        (*b"CN", EastAsia),     // China
        (*b"CO", LatinAmerica), // Colombia
        (*b"CR", LatinAmerica), // Costa Rica
        (*b"CU", LatinAmerica), // Cuba
        (*b"CV", Africa),       // Cabo Verde
        (*b"CW", LatinAmerica), // Curaçao
        (*b"CX", Oceania),      // Christmas Island
        (*b"CY", Europe),       // Cyprus
        (*b"CZ", Europe),       // Czechia
        (*b"DE", Europe),       // Germany
        (*b"DJ", Africa),       // Djibouti
        (*b"DK", Europe),       // Denmark
        (*b"DM", LatinAmerica), // Dominica
        (*b"DO", LatinAmerica), // Dominican Republic
        (*b"DZ", Africa),       // Algeria
        (*b"EC", LatinAmerica), // Ecuador
        (*b"EE", Europe),       // Estonia
        (*b"EG", MiddleEast),   // Egypt
        (*b"EH", Africa),       // Western Sahara
        (*b"ER", Africa),       // Eritrea
        (*b"ES", Europe),       // Spain
        (*b"ET", Africa),       // Ethiopia
        (*b"FI", Europe),       // Finland
        (*b"FJ", Oceania),      // Fiji
        (*b"FK", LatinAmerica), // Falkland Islands (Malvinas)
        (*b"FM", Oceania),      // Micronesia, Federated States of
        (*b"FO", Europe),       // Faroe Islands
        (*b"FR", Europe),       // France
        (*b"GA", Africa),       // Gabon
        (*b"GB", Europe),       // United Kingdom
        (*b"GD", LatinAmerica), // Grenada
        (*b"GE", Europe),       // Georgia
        (*b"GF", LatinAmerica), // French Guiana
        (*b"GG", Europe),       // Guernsey
        (*b"GH", Africa),       // Ghana
        (*b"GI", Europe),       // Gibraltar
        (*b"GL", NorthAmerica), // Greenland
        (*b"GM", Africa),       // Gambia
        (*b"GN", Africa),       // Guinea
        (*b"GP", LatinAmerica), // Guadeloupe
        (*b"GQ", Africa),       // Equatorial Guinea
        (*b"GR", Europe),       // Greece
        (*b"GS", LatinAmerica), // South Georgia and the South Sandwich Islands
        (*b"GT", LatinAmerica), // Guatemala
        (*b"GU", Oceania),      // Guam
        (*b"GW", Africa),       // Guinea-Bissau
        (*b"GY", LatinAmerica), // Guyana
        (*b"HK", EastAsia),     // Hong Kong
        (*b"HM", Oceania),      // Heard Island and McDonald Islands
        (*b"HN", LatinAmerica), // Honduras
        (*b"HR", Europe),       // Croatia
        (*b"HT", LatinAmerica), // Haiti
        (*b"HU", Europe),       // Hungary
        (*b"ID", EastAsia),     // Indonesia
        (*b"IE", Europe),       // Ireland
        (*b"IL", MiddleEast),   // Israel
        (*b"IM", Europe),       // Isle of Man
        (*b"IN", SouthAsia),    // India
        (*b"IO", SouthAsia),    // British Indian Ocean Territory
        (*b"IQ", MiddleEast),   // Iraq
        (*b"IR", MiddleEast),   // Iran
        (*b"IS", Europe),       // Iceland
        (*b"IT", Europe),       // Italy
        (*b"JE", Europe),       // Jersey
        (*b"JM", LatinAmerica), // Jamaica
        (*b"JO", MiddleEast),   // Jordan
        (*b"JP", EastAsia),     // Japan
        (*b"KE", Africa),       // Kenya
        (*b"KG", SouthAsia),    // Kyrgyzstan
        (*b"KH", EastAsia),     // Cambodia
        (*b"KI", Oceania),      // Kiribati
        (*b"KM", Africa),       // Comoros
        (*b"KN", LatinAmerica), // Saint Kitts and Nevis
        (*b"KP", EastAsia),     // Korea, Democratic People's Republic of
        (*b"KR", EastAsia),     // Korea, Republic of
        (*b"KW", MiddleEast),   // Kuwait
        (*b"KY", LatinAmerica), // Cayman Islands
        (*b"KZ", SouthAsia),    // Kazakhstan
        (*b"LA", EastAsia),     // Lao People's Democratic Republic
        (*b"LB", MiddleEast),   // Lebanon
        (*b"LC", LatinAmerica), // Saint Lucia
        (*b"LI", Europe),       // Liechtenstein
        (*b"LK", SouthAsia),    // Sri Lanka
        (*b"LR", Africa),       // Liberia
        (*b"LS", Africa),       // Lesotho
        (*b"LT", Europe),       // Lithuania
        (*b"LU", Europe),       // Luxembourg
        (*b"LV", Europe),       // Latvia
        (*b"LY", Africa),       // Libya
        (*b"MA", Africa),       // Morocco
        (*b"MC", Europe),       // Monaco
        (*b"MD", Europe),       // Moldova
        (*b"ME", Europe),       // Montenegro
        (*b"MF", LatinAmerica), // Saint Martin (French part)
        (*b"MG", Africa),       // Madagascar
        (*b"MH", Oceania),      // Marshall Islands
        (*b"MK", Europe),       // North Macedonia
        (*b"ML", Africa),       // Mali
        (*b"MM", EastAsia),     // Myanmar
        (*b"MN", EastAsia),     // Mongolia
        (*b"MO", EastAsia),     // Macao
        (*b"MP", Oceania),      // Northern Mariana Islands
        (*b"MQ", LatinAmerica), // Martinique
        (*b"MR", Africa),       // Mauritania
        (*b"MS", LatinAmerica), // Montserrat
        (*b"MT", Europe),       // Malta
        (*b"MU", Africa),       // Mauritius
        (*b"MV", SouthAsia),    // Maldives
        (*b"MW", Africa),       // Malawi
        (*b"MX", LatinAmerica), // Mexico
        (*b"MY", EastAsia),     // Malaysia
        (*b"MZ", Africa),       // Mozambique
        (*b"NA", Africa),       // Namibia
        (*b"NC", Oceania),      // New Caledonia
        (*b"NE", Africa),       // Niger
        (*b"NF", Oceania),      // Norfolk Island
        (*b"NG", Africa),       // Nigeria
        (*b"NI", LatinAmerica), // Nicaragua
        (*b"NL", Europe),       // Netherlands
        (*b"NO", Europe),       // Norway
        (*b"NP", SouthAsia),    // Nepal
        (*b"NR", Oceania),      // Nauru
        (*b"NU", Oceania),      // Niue
        (*b"NZ", Oceania),      // New Zealand
        (*b"OM", MiddleEast),   // Oman
        (*b"PA", LatinAmerica), // Panama
        (*b"PE", LatinAmerica), // Peru
        (*b"PF", Oceania),      // French Polynesia
        (*b"PG", Oceania),      // Papua New Guinea
        (*b"PH", EastAsia),     // Philippines
        (*b"PK", SouthAsia),    // Pakistan
        (*b"PL", Europe),       // Poland
        (*b"PM", NorthAmerica), // Saint Pierre and Miquelon
        (*b"PN", Oceania),      // Pitcairn
        (*b"PR", LatinAmerica), // Puerto Rico
        (*b"PS", MiddleEast),   // Palestine, State of
        (*b"PT", Europe),       // Portugal
        (*b"PW", Oceania),      // Palau
        (*b"PY", LatinAmerica), // Paraguay
        (*b"QA", MiddleEast),   // Qatar
        (*b"RE", Africa),       // Réunion
        (*b"RO", Europe),       // Romania
        (*b"RS", Europe),       // Serbia
        (*b"RU", Europe),       // Russian Federation
        (*b"RW", Africa),       // Rwanda
        (*b"SA", MiddleEast),   // Saudi Arabia
        (*b"SB", Oceania),      // Solomon Islands
        (*b"SC", Africa),       // Seychelles
        (*b"SD", Africa),       // Sudan
        (*b"SE", Europe),       // Sweden
        (*b"SG", EastAsia),     // Singapore
        (*b"SH", Africa),       // Saint Helena, Ascension and Tristan da Cunha
        (*b"SI", Europe),       // Slovenia
        (*b"SJ", Europe),       // Svalbard and Jan Mayen
        (*b"SK", Europe),       // Slovakia
        (*b"SL", Africa),       // Sierra Leone
        (*b"SM", Europe),       // San Marino
        (*b"SN", Africa),       // Senegal
        (*b"SO", Africa),       // Somalia
        (*b"SR", LatinAmerica), // Suriname
        (*b"SS", Africa),       // South Sudan
        (*b"ST", Africa),       // Sao Tome and Principe
        (*b"SV", LatinAmerica), // El Salvador
        (*b"SX", LatinAmerica), // Sint Maarten (Dutch part)
        (*b"SY", MiddleEast),   // Syrian Arab Republic
        (*b"SZ", Africa),       // Eswatini
        (*b"TC", LatinAmerica), // Turks and Caicos Islands
        (*b"TD", Africa),       // Chad
        (*b"TF", Oceania),      // French Southern Territories
        (*b"TG", Africa),       // Togo
        (*b"TH", EastAsia),     // Thailand
        (*b"TJ", SouthAsia),    // Tajikistan
        (*b"TK", Oceania),      // Tokelau
        (*b"TL", EastAsia),     // Timor-Leste
        (*b"TM", SouthAsia),    // Turkmenistan
        (*b"TN", Africa),       // Tunisia
        (*b"TO", Oceania),      // Tonga
        (*b"TR", MiddleEast),   // Türkiye
        (*b"TT", LatinAmerica), // Trinidad and Tobago
        (*b"TV", Oceania),      // Tuvalu
        (*b"TW", EastAsia),     // Taiwan
        (*b"TZ", Africa),       // Tanzania
        (*b"UA", Europe),       // Ukraine
        (*b"UG", Africa),       // Uganda
        (*b"UM", Oceania),      // United States Minor Outlying Islands
        (*b"US", NorthAmerica), // United States of America
        (*b"UY", LatinAmerica), // Uruguay
        (*b"UZ", SouthAsia),    // Uzbekistan
        (*b"VA", Europe),       // Holy See
        (*b"VC", LatinAmerica), // Saint Vincent and the Grenadines
        (*b"VE", LatinAmerica), // Venezuela
        (*b"VG", LatinAmerica), // Virgin Islands (British)
        (*b"VI", LatinAmerica), // Virgin Islands (U.S.)
        (*b"VN", EastAsia),     // Viet Nam
        (*b"VU", Oceania),      // Vanuatu
        (*b"WF", Oceania),      // Wallis and Futuna
        (*b"WS", Oceania),      // Samoa
        (*b"YE", MiddleEast),   // Yemen
        (*b"YT", Africa),       // Mayotte
        (*b"ZA", Africa),       // South Africa
        (*b"ZM", Africa),       // Zambia
        (*b"ZW", Africa),       // Zimbabwe
    ]
};

/// True if `TABLE` holds `ASSIGNED` upper-case codes in strictly increasing
/// order (so binary search is sound and there are no duplicates).
const fn table_is_well_formed() -> bool {
    if TABLE.len() != ASSIGNED {
        return false;
    }
    let mut i = 0;
    while i < TABLE.len() {
        let [a, b] = TABLE[i].0;
        if !a.is_ascii_uppercase() || !b.is_ascii_uppercase() {
            return false;
        }
        if i > 0 {
            let [pa, pb] = TABLE[i - 1].0;
            if !(pa < a || (pa == a && pb < b)) {
                return false;
            }
        }
        i += 1;
    }
    true
}

// Checked when the crate compiles, not only under `cargo test`.
const _: () = assert!(
    table_is_well_formed(),
    "region TABLE must be 249 sorted, distinct upper-case codes"
);

#[cfg(test)]
mod tests {
    use super::*;

    fn count(region: MacroRegion) -> usize {
        TABLE.iter().filter(|(_, r)| *r == region).count()
    }

    #[test]
    fn table_has_every_assigned_code_once_in_order() {
        assert_eq!(TABLE.len(), 249);
        assert!(
            TABLE.windows(2).all(|w| w[0].0 < w[1].0),
            "sorted, no duplicates"
        );
        assert!(table_is_well_formed());
        let total: usize = MacroRegion::ALL.iter().map(|&r| count(r)).sum();
        assert_eq!(total, 249);
        for (code, region) in TABLE {
            let c = CountryCode(*code);
            assert_eq!(c.macro_region(), Some(*region), "{c:?}");
            assert_eq!(CountryCode::parse(c.as_str()), Ok(c));
            assert_eq!(CountryCode::parse(&c.as_str().to_ascii_lowercase()), Ok(c));
        }
    }

    #[test]
    fn parse_accepts_either_case_and_trims() {
        let de = CountryCode::parse("de").unwrap();
        assert_eq!(de, CountryCode(*b"DE"));
        assert_eq!(de.macro_region(), Some(MacroRegion::Europe));
        assert_eq!(CountryCode::parse(" DE\n"), Ok(de));
        assert_eq!(CountryCode::parse("dE"), Ok(de));
        assert_eq!(de.as_str(), "DE");
        assert_eq!(de.to_string(), "DE");
        assert_eq!(format!("{de:?}"), "CountryCode(DE)");
    }

    #[test]
    fn parse_refuses_non_codes_with_the_documented_message() {
        for bad in [
            "XX", "D", "DEU", "", "1A", "  ", "ÄÖ", "é", "D-", "ZZ", "EU", "UK",
        ] {
            let err = CountryCode::parse(bad).unwrap_err();
            assert_eq!(err, RegionError::NotACountryCode(bad.to_string()));
            assert_eq!(
                err.to_string(),
                format!(
                    "{bad:?} is not an ISO 3166-1 alpha-2 country code (two letters, e.g. DE or US)"
                )
            );
        }
        assert_eq!(
            CountryCode::parse("XX").unwrap_err().to_string(),
            "\"XX\" is not an ISO 3166-1 alpha-2 country code (two letters, e.g. DE or US)"
        );
    }

    #[test]
    fn judgement_calls_follow_the_brief() {
        use MacroRegion::*;
        let cases = [
            ("US", NorthAmerica),
            ("CA", NorthAmerica),
            ("GL", NorthAmerica),
            ("BM", NorthAmerica),
            ("PM", NorthAmerica),
            ("MX", LatinAmerica),
            ("FK", LatinAmerica),
            ("GS", LatinAmerica),
            ("PR", LatinAmerica),
            ("RU", Europe),
            ("GE", Europe),
            ("AM", Europe),
            ("AZ", Europe),
            ("CY", Europe),
            ("UA", Europe),
            ("TR", MiddleEast),
            ("EG", MiddleEast),
            ("IR", MiddleEast),
            ("PS", MiddleEast),
            ("MA", Africa),
            ("DZ", Africa),
            ("TN", Africa),
            ("LY", Africa),
            ("SH", Africa),
            ("RE", Africa),
            ("YT", Africa),
            ("EH", Africa),
            ("IO", SouthAsia),
            ("KZ", SouthAsia),
            ("UZ", SouthAsia),
            ("TM", SouthAsia),
            ("KG", SouthAsia),
            ("TJ", SouthAsia),
            ("AF", SouthAsia),
            ("TW", EastAsia),
            ("SG", EastAsia),
            ("TL", EastAsia),
            ("AQ", Oceania),
            ("BV", Oceania),
            ("HM", Oceania),
            ("TF", Oceania),
        ];
        for (code, region) in cases {
            let c = CountryCode::parse(code).unwrap();
            assert_eq!(c.macro_region(), Some(region), "{code}");
        }
    }

    #[test]
    fn every_region_has_at_least_five_countries() {
        for r in MacroRegion::ALL {
            assert!(count(r) >= 5, "{r} has only {}", count(r));
        }
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(MacroRegion::ALL.len(), MacroRegion::COUNT);
        for (i, r) in MacroRegion::ALL.into_iter().enumerate() {
            assert_eq!(r.index(), i);
            assert_eq!(MacroRegion::from_name(r.name()), Some(r));
            assert_eq!(
                MacroRegion::from_name(&r.name().to_ascii_uppercase()),
                Some(r)
            );
            assert_eq!(r.to_string(), r.name());
        }
        assert_eq!(
            MacroRegion::from_name("East-Asia"),
            Some(MacroRegion::EastAsia)
        );
        assert_eq!(MacroRegion::from_name("eastasia"), None);
        assert_eq!(MacroRegion::from_name(""), None);
    }

    #[test]
    fn raw_bytes_never_panic() {
        let junk = CountryCode([0xff, 0]);
        assert_eq!(junk.as_str(), "??");
        assert_eq!(junk.macro_region(), None);
        assert_eq!(junk.to_string(), "??");
        assert_eq!(format!("{junk:?}"), "CountryCode([ff, 00])");
        // Lower-case bytes are not a valid code, though they are printable.
        let lower = CountryCode(*b"de");
        assert_eq!(lower.as_str(), "de");
        assert_eq!(lower.macro_region(), None);
        // Exhaustively: no byte pair panics, and exactly the table resolves.
        let mut resolved = 0;
        for a in 0..=u8::MAX {
            for b in 0..=u8::MAX {
                let c = CountryCode([a, b]);
                let _ = c.as_str();
                let _ = format!("{c} {c:?}");
                if c.macro_region().is_some() {
                    resolved += 1;
                }
            }
        }
        assert_eq!(resolved, 249);
    }
}
