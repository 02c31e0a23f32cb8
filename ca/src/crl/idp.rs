//! Distribution point structures shared by certificates and CRLs: a
//! certificate's CRL Distribution Points and Freshest CRL, and a CRL's Issuing
//! Distribution Point, all naming one URL.

use const_oid::ObjectIdentifier;
use der::Encode;
use der::asn1::{Ia5String, OctetString};
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::crl::dp::DistributionPoint;
use x509_cert::ext::pkix::crl::{CrlDistributionPoints, FreshestCrl, IssuingDistributionPoint};
use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};

/// id-ce-issuingDistributionPoint. x509-cert 0.3.0 gives its
/// `IssuingDistributionPoint` the subjectInfoAccess OID, so the extension is
/// built with the right one here.
pub const ID_CE_ISSUING_DISTRIBUTION_POINT: ObjectIdentifier =
    const_oid::db::rfc5280::ID_CE_ISSUING_DISTRIBUTION_POINT;

fn point(url: &str) -> der::Result<DistributionPointName> {
    Ok(DistributionPointName::FullName(vec![
        GeneralName::UniformResourceIdentifier(Ia5String::new(url)?),
    ]))
}

fn one(url: &str) -> der::Result<Vec<DistributionPoint>> {
    Ok(vec![DistributionPoint {
        distribution_point: Some(point(url)?),
        reasons: None,
        crl_issuer: None,
    }])
}

/// cRLDistributionPoints of a certificate: where its complete CRL is.
pub fn crl_distribution_points(url: &str) -> der::Result<CrlDistributionPoints> {
    Ok(CrlDistributionPoints(one(url)?))
}

/// freshestCRL (RFC 5280 4.2.1.15, 5.2.6): where the delta CRL is.
pub fn freshest_crl(url: &str) -> der::Result<FreshestCrl> {
    Ok(FreshestCrl(one(url)?))
}

/// The critical Issuing Distribution Point of a shard CRL (RFC 5280 5.2.5):
/// its scope is the end-entity certificates whose CRL distribution point is
/// `url`. Without it a relying party could take a shard for the whole list.
pub fn issuing_distribution_point(url: &str) -> der::Result<Extension> {
    let idp = IssuingDistributionPoint {
        distribution_point: Some(point(url)?),
        only_contains_user_certs: true,
        only_contains_ca_certs: false,
        only_some_reasons: None,
        indirect_crl: false,
        only_contains_attribute_certs: false,
    };
    Ok(Extension {
        extn_id: ID_CE_ISSUING_DISTRIBUTION_POINT,
        critical: true,
        extn_value: OctetString::new(idp.to_der()?)?,
    })
}
