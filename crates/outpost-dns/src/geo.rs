//! GeoIP: an address to a country, through any database in the MaxMind DB format that carries
//! a country code per network: the ip-location-db layout (`country_code`, e.g. the CC0
//! `geo-whois-asn-country` database the scripts install) or MaxMind's GeoIP2/GeoLite2 layout
//! (`country.iso_code`, falling back to `registered_country.iso_code`).

use crate::countries::{country, Country};
use serde::Deserialize;
use std::net::IpAddr;
use std::path::Path;

/// A GeoIP problem (opening or reading the database).
#[derive(Debug, thiserror::Error)]
#[error("geoip {path}: {message}")]
pub struct GeoError {
    /// The database file.
    pub path: String,
    /// What went wrong.
    pub message: String,
}

#[derive(Deserialize)]
struct Iso<'a> {
    #[serde(borrow)]
    iso_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct Record<'a> {
    #[serde(borrow)]
    country_code: Option<&'a str>,
    #[serde(borrow)]
    country: Option<Iso<'a>>,
    #[serde(borrow)]
    registered_country: Option<Iso<'a>>,
}

/// Where an address is.
#[derive(Debug, Clone, Copy)]
pub struct Place {
    /// The country, if the database has one we know.
    pub country: Option<&'static Country>,
    /// Prefix length of the database network holding the address (the answer's ECS scope).
    pub prefix: u8,
}

/// An open GeoIP database (read into memory once).
pub struct Geo {
    reader: maxminddb::Reader<Vec<u8>>,
    path: String,
}

impl std::fmt::Debug for Geo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Geo").field("path", &self.path).finish()
    }
}

impl Geo {
    /// Open the database at `path`.
    pub fn open(path: &Path) -> Result<Self, GeoError> {
        let reader = maxminddb::Reader::open_readfile(path).map_err(|e| GeoError {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(Self {
            reader,
            path: path.display().to_string(),
        })
    }

    /// The database's type and build date, for logs.
    pub fn describe(&self) -> String {
        format!(
            "{} ({}, built {})",
            self.path, self.reader.metadata.database_type, self.reader.metadata.build_epoch
        )
    }

    /// Where `addr` is. A database error or an unknown country is "nowhere" with the widest
    /// prefix, never a failure: the client then goes to the default region.
    pub fn locate(&self, addr: IpAddr) -> Place {
        let looked = self.reader.lookup_prefix::<Record<'_>>(addr);
        let Ok((rec, prefix)) = looked else {
            return Place {
                country: None,
                prefix: 0,
            };
        };
        // An IPv4 address looked up in an IPv6 tree reports the length in the mapped space.
        let prefix = match addr {
            IpAddr::V4(_) if prefix > 32 => prefix.saturating_sub(96),
            _ => prefix,
        };
        let prefix = u8::try_from(prefix).unwrap_or(0);
        let code = rec.and_then(|r| {
            r.country_code
                .or(r.country.and_then(|c| c.iso_code))
                .or(r.registered_country.and_then(|c| c.iso_code))
        });
        Place {
            country: code.and_then(|c| country(&c.to_ascii_uppercase())),
            prefix,
        }
    }
}
