//! Where S3-compatible stores answer otherwise than AWS does, and what stowage makes of it
//! (tests/s3_compat.rs runs the same suite against moto, SeaweedFS and rclone).

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

/// The upload id of a CreateMultipartUpload answer the SDK could not parse. rclone's
/// `serve s3` (1.75) names its root element `InitiateMultipartUpload` where S3 says
/// `InitiateMultipartUploadResult`, which aws-sdk-s3 refuses; the answer is otherwise
/// S3's, and a 200 with an upload id means the upload was started. The SDK reports such an
/// answer as an unhandled service error (or a response error), the body read whole.
pub(super) fn upload_id_of_unparsed<E>(err: &SdkError<E, HttpResponse>) -> Option<String> {
    let raw = match err {
        SdkError::ServiceError(se) => se.raw(),
        SdkError::ResponseError(r) => r.raw(),
        _ => return None,
    };
    if raw.status().as_u16() != 200 {
        return None;
    }
    let body = std::str::from_utf8(raw.body().bytes()?).ok()?;
    if !body.contains("<InitiateMultipartUpload") {
        return None;
    }
    element(body, "UploadId").filter(|id| !id.is_empty())
}

/// The text of the first `<name>…</name>` in `xml`, its entities decoded.
fn element(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let len = xml[start..].find(&format!("</{name}>"))?;
    Some(unescape(xml[start..start + len].trim()))
}

/// XML's five named entities and numeric character references.
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let Some(semi) = rest.find(';') else {
            break;
        };
        let entity = &rest[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .map(|h| u32::from_str_radix(h, 16))
                .or_else(|| entity.strip_prefix('#').map(str::parse))
                .and_then(Result::ok)
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The store has no such operation: 501 NotImplemented (s3s-fs, and most stores for what
/// they lack), or 405 MethodNotAllowed (SeaweedFS and rclone for RestoreObject).
pub(super) fn lacks_operation<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> bool {
    let SdkError::ServiceError(se) = err else {
        return false;
    };
    matches!(se.raw().status().as_u16(), 405 | 501)
        || matches!(err.code(), Some("NotImplemented" | "MethodNotAllowed"))
}

/// A ListMultipartUploads answer that means "this store lists none" rather than a failure:
/// a store without the operation, and rclone's 404 NoSuchUpload for a bucket that has
/// never had an open upload since the server started.
pub(super) fn lists_no_uploads<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> bool {
    let SdkError::ServiceError(se) = err else {
        return false;
    };
    lacks_operation(err) || (se.raw().status().as_u16() == 404 && err.code() == Some("NoSuchUpload"))
}

/// A DeleteObjects the store refuses as such, where one DeleteObject per key would do: a
/// store without it (GCS's XML API until 2025), or one that wants the Content-MD5 that
/// aws-sdk-s3 no longer sends (it sends a CRC32 instead, even with `checksums =
/// "when_required"`).
pub(super) fn deletes_one_by_one<E: ProvideErrorMetadata>(
    err: &SdkError<E, HttpResponse>,
) -> bool {
    lacks_operation(err) || matches!(err.code(), Some("MissingContentMD5"))
}

/// Said after the error of a RestoreObject the store does not have.
pub(super) const NO_RESTORE_OBJECT: &str = "this store has no RestoreObject: it does not archive, and an archive class (GLACIER, DEEP_ARCHIVE) is only a label there that stowage cannot read past; write to it without storage_class (or with STANDARD or GLACIER_IR), and copy objects already written to STANDARD (aws s3 cp --storage-class STANDARD, the object onto itself) to restore them";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_and_entities() {
        let rclone = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<InitiateMultipartUpload>\n  <Bucket>bkt</Bucket>\n  <Key>x/big</Key>\n  <UploadId>0f071b86-dacc-4e02-8e50-d253dbcfd55b</UploadId>\n</InitiateMultipartUpload>";
        assert_eq!(
            element(rclone, "UploadId").as_deref(),
            Some("0f071b86-dacc-4e02-8e50-d253dbcfd55b")
        );
        assert_eq!(element(rclone, "Missing"), None);
        assert_eq!(
            element("<ETag>&#34;ab-3&#34;</ETag>", "ETag").as_deref(),
            Some("\"ab-3\"")
        );
        assert_eq!(unescape("a&amp;b&lt;&#x41;&bogus;&"), "a&b<A&bogus;&");
    }

    fn answer(status: u16, body: &str) -> HttpResponse {
        HttpResponse::new(
            status.try_into().expect("a status code"),
            aws_sdk_s3::primitives::SdkBody::from(body.to_string()),
        )
    }

    #[test]
    fn an_upload_id_from_a_misnamed_root() {
        use aws_sdk_s3::operation::create_multipart_upload::CreateMultipartUploadError;
        let body = "<?xml version=\"1.0\"?>\n<InitiateMultipartUpload><Bucket>b</Bucket><Key>k</Key><UploadId>u-1&amp;2</UploadId></InitiateMultipartUpload>";
        let unparsed = |status, body| {
            SdkError::<CreateMultipartUploadError, _>::response_error(
                "invalid xml root",
                answer(status, body),
            )
        };
        assert_eq!(
            upload_id_of_unparsed(&unparsed(200, body)).as_deref(),
            Some("u-1&2")
        );
        // As aws-sdk-s3 1.157 reports it: an unhandled error of the operation.
        let unhandled = SdkError::service_error(
            CreateMultipartUploadError::unhandled("invalid xml root"),
            answer(200, body),
        );
        assert_eq!(upload_id_of_unparsed(&unhandled).as_deref(), Some("u-1&2"));
        // Only a success that is such an answer: not an error page, not another document.
        assert_eq!(upload_id_of_unparsed(&unparsed(500, body)), None);
        assert_eq!(
            upload_id_of_unparsed(&unparsed(200, "<Error><UploadId>x</UploadId></Error>")),
            None
        );
        assert_eq!(
            upload_id_of_unparsed(&unparsed(
                200,
                "<InitiateMultipartUpload><UploadId></UploadId></InitiateMultipartUpload>"
            )),
            None
        );
    }

    #[test]
    fn stores_that_list_no_uploads() {
        use aws_sdk_s3::error::ErrorMetadata;
        use aws_sdk_s3::operation::list_multipart_uploads::ListMultipartUploadsError;
        let refused = |status, code: &str| {
            SdkError::service_error(
                ListMultipartUploadsError::generic(ErrorMetadata::builder().code(code).build()),
                answer(status, ""),
            )
        };
        assert!(lists_no_uploads(&refused(501, "")));
        assert!(lists_no_uploads(&refused(400, "NotImplemented")));
        assert!(lists_no_uploads(&refused(404, "NoSuchUpload")));
        assert!(!lists_no_uploads(&refused(404, "NoSuchBucket")));
        assert!(!lists_no_uploads(&refused(403, "AccessDenied")));
        assert!(lacks_operation(&refused(405, "MethodNotAllowed")));
        assert!(lacks_operation(&refused(400, "MethodNotAllowed")));
        assert!(!lacks_operation(&refused(404, "NoSuchUpload")));
        assert!(!lacks_operation(&refused(403, "InvalidObjectState")));
        assert!(deletes_one_by_one(&refused(400, "MissingContentMD5")));
        assert!(deletes_one_by_one(&refused(501, "NotImplemented")));
        assert!(!deletes_one_by_one(&refused(403, "AccessDenied")));
    }
}
