# The IAM agency FunctionGraph acts through for these functions. It holds only what FunctionGraph
# itself does on their behalf, each permission for a documented reason:
#
#   - VPC access: FunctionGraph creates, reads and deletes the functions' network ports in the app
#     subnet, and reads that subnet and its VPC.
#   - the DMS for Kafka trigger: FunctionGraph reads the Kafka instance to poll the readings topic.
#   - the consumer's failure destination: FunctionGraph writes failed batches to the artifacts
#     bucket, under local.failure_prefix and nowhere else.
#
# Not here, on purpose: function logs (FunctionGraph ships them to LTS itself; its agency page lists
# no LTS permission). FunctionGraph hands the code, through the context, the temporary credentials of
# the function's *execution* agency (`app_agency`), which is this configuration agency unless another
# is set [exec], so whatever is granted here is what a compromised function could do.
#
# The one cloud API the code calls is SMN's publish, from the maintenance function (alert
# notifications, alerts.tf). That function alone gets an execution agency of its own holding only
# smn:topic:publish [smn], so no other function's code can publish, and the maintenance code gets none
# of the rights above (also while SMN is off: publishing is the least it could be given). SMN's role-based (XA) policies have no resource-level scope [smn], so the right
# covers the region's topics, not just the alert topic; scoping to one topic exists only in IAM's newer
# identity policies, which attach to a different kind of agency. With fgs_agency_name set, Terraform
# creates no IAM resource: grant smn:topic:publish to that agency yourself, or set alert_smn_topic =
# "none".
#
# Sources (Huawei Cloud documentation):
#   [agency]  FunctionGraph, "Configuring Agency Permissions", table "Common actions": the
#             fine-grained minimum per scenario (DMS trigger, VPC, asynchronous notification to OBS
#             or SMN). https://support.huaweicloud.com/intl/en-us/usermanual-functiongraph/functiongraph_01_0920.html
#   [vpc]     the actions FunctionGraph needs to connect a function to a VPC (vpc:ports:create/get/
#             delete, vpc:vpcs:get, vpc:subnets:get), as EventGrid grants them to FunctionGraph for
#             the same purpose. https://support.huaweicloud.com/intl/en-us/usermanual-eg/eg-ug-035.html
#             The FunctionGraph FAQ "Which Actions Can Be Used Instead of a VPC Administrator Agency
#             for VPC Access?" lists the same five.
#   [policy]  IAM API, "Creating a Custom Policy for Cloud Services": type AX applies to global
#             services, XA to region-specific projects, and one policy cannot mix the actions of
#             both. https://support.huaweicloud.com/intl/en-us/api-iam/iam_02_0013.html
#   [obs]     OBS is a global service: its permissions are granted in the global project.
#             https://support.huaweicloud.com/intl/id-id/productdesc-obs/obs_03_0045.html
#   [obs-urn] OBS resource paths: obs:*:*:bucket:<bucket> and obs:*:*:object:<bucket>/<key>.
#             https://support.huaweicloud.com/intl/en-us/usermanual-obs/obs_03_0154.html
#   [exec]    FunctionGraph, "Creating a Function": an agency for function execution can be set apart
#             from the one for configuration. https://support.huaweicloud.com/intl/id-id/ally-visitor-1-usermanual-functiongraph/functiongraph_01_0153_0.html
#             The provider: `app_agency`, "the function execution agency (app_agency) and the function
#             configuration agency (agency) can be independently set" (docs/resources/fgs_function.md).
#   [smn]     SMN API reference, "Permissions Policies and Supported Actions": publishing a message is
#             smn:topic:publish; the policy-based table lists no resource types.
#             https://support.huaweicloud.com/intl/en-us/api-smn/smn_api_80014.html
#   [logs]    FunctionGraph sends function logs to LTS without any configuration.
#             https://support.huaweicloud.com/intl/en-us/usermanual-functiongraph/functiongraph_01_1834.html
#
# How the provider wires it (terraform-provider-huaweicloud v1.97.1): huaweicloud_identity_role
# creates a custom policy whose `name` is its display name (resource_huaweicloud_identity_role.go);
# huaweicloud_identity_agency looks every role name up among the system roles and the account's
# custom policies and grants `project_role` per project and `domain_roles` for global services
# (resource_huaweicloud_identity_agency.go). A name it cannot find is skipped with only a log line,
# so the roles below are referenced, never spelled out.

locals {
  create_agency = var.fgs_agency_name == ""
  agency        = local.create_agency ? huaweicloud_identity_agency.functions[0].name : var.fgs_agency_name

  # Region-level (XA) policy: VPC access [vpc] and the Kafka trigger [agency].
  # The Kafka trigger's need is documented as dms:instance:get for "a DMS trigger"; that it is enough
  # for a DMS for Kafka trigger is not confirmed, hence var.fgs_agency_dms_readonly_fallback.
  functions_regional_policy = {
    Version = "1.1"
    Statement = [
      {
        Effect = "Allow"
        Action = [
          "vpc:ports:create",
          "vpc:ports:delete",
          "vpc:ports:get",
          "vpc:subnets:get",
          "vpc:vpcs:get",
        ]
      },
      {
        Effect = "Allow"
        Action = ["dms:instance:get"]
      },
    ]
  }

  # Global (AX) policy: the consumer's failure destination [agency], on the artifacts bucket and the
  # failure prefix only [obs-urn]. CreateBucket is in FunctionGraph's documented minimum; scoped to a
  # bucket that already exists, it can at most recreate that bucket if it were deleted.
  functions_obs_policy = {
    Version = "1.1"
    Statement = [
      {
        Effect   = "Allow"
        Action   = ["obs:bucket:HeadBucket", "obs:bucket:CreateBucket"]
        Resource = ["obs:*:*:bucket:${huaweicloud_obs_bucket.artifacts.bucket}"]
      },
      {
        Effect   = "Allow"
        Action   = ["obs:object:PutObject"]
        Resource = ["obs:*:*:object:${huaweicloud_obs_bucket.artifacts.bucket}/${local.failure_prefix}*"]
      },
    ]
  }

  # The narrowest system role documented for the DMS trigger [agency]: read-only on DMS in the region.
  dms_readonly_role = "DMS ReadOnlyAccess"
}

resource "huaweicloud_identity_role" "functions_regional" {
  count = local.create_agency ? 1 : 0

  name        = "${var.name_prefix}-functiongraph-vpc-kafka"
  description = "FunctionGraph for ${var.name_prefix}: function ports in the VPC, reading the Kafka instance"
  type        = "XA"
  policy      = jsonencode(local.functions_regional_policy)
}

resource "huaweicloud_identity_role" "functions_obs" {
  count = local.create_agency ? 1 : 0

  name        = "${var.name_prefix}-functiongraph-failures"
  description = "FunctionGraph for ${var.name_prefix}: writing consumer failures to the artifacts bucket"
  type        = "AX"
  policy      = jsonencode(local.functions_obs_policy)
}

resource "huaweicloud_identity_agency" "functions" {
  count = local.create_agency ? 1 : 0

  name        = "${var.name_prefix}-functiongraph"
  description = "FunctionGraph: VPC access, the DMS Kafka trigger, consumer failures to OBS"
  # The account name IAM gives FunctionGraph as a trusted cloud service (the console's "Cloud
  # service: FunctionGraph"). The provider sends this and delegated_domain_name as the same API
  # field; Huawei's pages do not print the name, so check the agency in the IAM console after apply.
  delegated_service_name = "op_svc_cff"

  # VPC and DMS are regional: granted in the deployment region's project only.
  project_role {
    project = var.region
    roles = concat(
      [huaweicloud_identity_role.functions_regional[0].name],
      var.fgs_agency_dms_readonly_fallback ? [local.dms_readonly_role] : [],
    )
  }

  # OBS is a global service [obs]: Huawei grants its permissions in the global project, not per region.
  domain_roles = [huaweicloud_identity_role.functions_obs[0].name]
}

# ---------------------------------------------------------------- the maintenance function's execution agency

locals {
  # null with fgs_agency_name: the platform's default, that agency
  maintenance_execution_agency = local.create_agency ? huaweicloud_identity_agency.maintenance_execution[0].name : null

  # Region-level (XA) policy: publishing alert notifications [smn], nothing else.
  alerts_publish_policy = {
    Version = "1.1"
    Statement = [
      {
        Effect = "Allow"
        Action = ["smn:topic:publish"]
      },
    ]
  }
}

resource "huaweicloud_identity_role" "alerts_publish" {
  count = local.create_agency ? 1 : 0

  name        = "${var.name_prefix}-functiongraph-alerts-publish"
  description = "FunctionGraph for ${var.name_prefix}: the maintenance function publishes alert notifications to SMN"
  type        = "XA"
  policy      = jsonencode(local.alerts_publish_policy)
}

resource "huaweicloud_identity_agency" "maintenance_execution" {
  count = local.create_agency ? 1 : 0

  name                   = "${var.name_prefix}-maintenance-exec"
  description            = "FunctionGraph: what the maintenance function's code may do (publish alert notifications to SMN)"
  delegated_service_name = "op_svc_cff"

  # SMN is regional: granted in the deployment region's project only.
  project_role {
    project = var.region
    roles   = [huaweicloud_identity_role.alerts_publish[0].name]
  }
}
