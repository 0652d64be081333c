//! JSON rendering of route-guide messages, one object per line.
//!
//! prost structs do not derive `Serialize`, so each message gets a borrowed mirror here. Field
//! names follow the proto3 JSON mapping (lowerCamelCase) in proto field order, and every field
//! is emitted, zero values included, like Go's `protojson` with `EmitUnpopulated`: scripts
//! comparing against the Go sample's output then see the same keys whatever the values.
//! (`serde_json::json!` would sort the keys alphabetically instead.)

use bootstrap::proto::routeguide::{Feature, Point, RouteNote, RouteSummary};
use serde::Serialize;

#[derive(Serialize)]
struct PointJson {
    latitude: i32,
    longitude: i32,
}

impl From<&Point> for PointJson {
    fn from(p: &Point) -> Self {
        Self {
            latitude: p.latitude,
            longitude: p.longitude,
        }
    }
}

#[derive(Serialize)]
struct FeatureJson<'a> {
    name: &'a str,
    location: Option<PointJson>,
}

#[derive(Serialize)]
struct NoteJson<'a> {
    location: Option<PointJson>,
    message: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SummaryJson {
    point_count: i32,
    feature_count: i32,
    distance: i32,
    elapsed_time: i32,
}

pub fn feature(f: &Feature) -> String {
    to_line(&FeatureJson {
        name: &f.name,
        location: f.location.as_ref().map(PointJson::from),
    })
}

pub fn note(n: &RouteNote) -> String {
    to_line(&NoteJson {
        location: n.location.as_ref().map(PointJson::from),
        message: &n.message,
    })
}

pub fn summary(s: &RouteSummary) -> String {
    to_line(&SummaryJson {
        point_count: s.point_count,
        feature_count: s.feature_count,
        distance: s.distance,
        elapsed_time: s.elapsed_time,
    })
}

fn to_line(value: &impl Serialize) -> String {
    // Plain structs of strings and integers: serialising them has no failure mode.
    serde_json::to_string(value).expect("JSON of plain structs")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_line() {
        let f = Feature {
            name: "Berkshire Valley".into(),
            location: Some(Point {
                latitude: 409146138,
                longitude: -746188906,
            }),
        };
        assert_eq!(
            feature(&f),
            r#"{"name":"Berkshire Valley","location":{"latitude":409146138,"longitude":-746188906}}"#
        );
        assert_eq!(
            feature(&Feature::default()),
            r#"{"name":"","location":null}"#
        );
    }

    #[test]
    fn note_line() {
        let n = RouteNote {
            location: Some(Point::default()),
            message: "a \"quoted\" note".into(),
        };
        assert_eq!(
            note(&n),
            r#"{"location":{"latitude":0,"longitude":0},"message":"a \"quoted\" note"}"#
        );
    }

    #[test]
    fn summary_uses_camel_case() {
        let s = RouteSummary {
            point_count: 2,
            ..Default::default()
        };
        assert_eq!(
            summary(&s),
            r#"{"pointCount":2,"featureCount":0,"distance":0,"elapsedTime":0}"#
        );
    }
}
