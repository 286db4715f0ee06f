# ---------------------------------------------------------------- where and what

variable "region" {
  description = "Huawei Cloud region to deploy to, e.g. ap-southeast-1."
  type        = string

  validation {
    condition     = can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]+$", var.region))
    error_message = "region must look like ap-southeast-1 or cn-north-4."
  }
}

variable "availability_zone" {
  description = "Availability zone for RDS, DCS, Kafka and APIG (single-AZ stack). Empty: the region's first AZ."
  type        = string
  default     = ""

  validation {
    condition     = var.availability_zone == "" || can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]+[a-z]$", var.availability_zone))
    error_message = "availability_zone must be empty or an AZ name such as ap-southeast-1a."
  }
}

variable "name_prefix" {
  description = "Prefix of every resource name; functions are <prefix>-ingest, <prefix>-consumer, ... (the deploy tool's --prefix)."
  type        = string
  default     = "iot"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,14}$", var.name_prefix))
    error_message = "name_prefix must be 2-15 characters: lower-case letters, digits and hyphens, starting with a letter."
  }
}

variable "obs_bucket_prefix" {
  description = "Globally unique prefix for the OBS buckets <prefix>-artifacts (dependency zip, consumer failures) and <prefix>-dashboard (static site)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,48}[a-z0-9]$", var.obs_bucket_prefix))
    error_message = "obs_bucket_prefix must be 3-50 characters: lower-case letters, digits, dots and hyphens."
  }
}

variable "dist_dir" {
  description = "Folder with the packages built by `make package`, relative to this module."
  type        = string
  default     = "../../dist"
}

variable "tags" {
  description = "Tags added to every resource that takes tags."
  type        = map(string)
  default     = {}
}

# ---------------------------------------------------------------- network

variable "vpc_cidr" {
  description = "CIDR of the VPC; the app subnet (functions, APIG) and the data subnet (RDS, DCS, Kafka) are /24s inside it."
  type        = string
  default     = "10.20.0.0/16"

  validation {
    condition     = can(cidrsubnet(var.vpc_cidr, 8, 2)) && tonumber(split("/", var.vpc_cidr)[1]) <= 22
    error_message = "vpc_cidr must be an IPv4 CIDR of /22 or larger."
  }
}

variable "api_allowed_cidrs" {
  description = "Who may call the API gateway over HTTPS (443). Devices post from anywhere by default."
  type        = list(string)
  default     = ["0.0.0.0/0"]

  validation {
    condition     = length(var.api_allowed_cidrs) > 0 && alltrue([for c in var.api_allowed_cidrs : can(cidrhost(c, 0))])
    error_message = "api_allowed_cidrs must be a non-empty list of IPv4 CIDRs."
  }
}

# ---------------------------------------------------------------- FunctionGraph

variable "functions" {
  description = "Size of each function: memory (MB), timeout and initializer timeout (s), maximum instances."
  type = map(object({
    memory_size         = number
    timeout             = number
    initializer_timeout = number
    max_instances       = number
  }))
  default = {
    ingest    = { memory_size = 256, timeout = 15, initializer_timeout = 30, max_instances = 100 }
    consumer  = { memory_size = 512, timeout = 120, initializer_timeout = 60, max_instances = 20 }
    query     = { memory_size = 256, timeout = 15, initializer_timeout = 30, max_instances = 50 }
    dashboard = { memory_size = 128, timeout = 10, initializer_timeout = 30, max_instances = 10 }
    # Two instances: the timer's pass and a deploy's smoke invocation may run at once (the second
    # one finds the advisory lock taken and skips). 120 s stays below the 180 s the deploy tool
    # waits for a synchronous invocation, so its smoke test sees a slow pass time out, not hang.
    maintenance = { memory_size = 256, timeout = 120, initializer_timeout = 60, max_instances = 2 }
    # APIG's custom authorizer: called before every ingest request and every uncached read, so it may
    # run as often as ingest and query together. It answers from its cache or one indexed lookup; APIG
    # waits only a few seconds for an authorizer (docs/functiongraph.md, section 8).
    authorizer = { memory_size = 256, timeout = 5, initializer_timeout = 30, max_instances = 150 }
  }

  validation {
    condition     = sort(keys(var.functions)) == sort(["authorizer", "consumer", "dashboard", "ingest", "maintenance", "query"])
    error_message = "functions must have exactly the keys ingest, consumer, query, dashboard, maintenance and authorizer."
  }

  validation {
    condition = alltrue([for f in values(var.functions) :
      f.memory_size >= 128 && f.memory_size <= 4096 && f.timeout >= 3 && f.timeout <= 900 &&
      f.initializer_timeout >= 1 && f.initializer_timeout <= 300 && f.max_instances >= 1
    ])
    error_message = "memory_size 128-4096, timeout 3-900, initializer_timeout 1-300, max_instances >= 1."
  }
}

variable "fgs_agency_name" {
  description = "Existing IAM agency for FunctionGraph instead of the one iam.tf creates; it needs what iam.tf grants (VPC ports, dms:instance:get, writing consumer failures to the artifacts bucket). Empty: one is created with exactly that."
  type        = string
  default     = ""

  validation {
    condition     = length(var.fgs_agency_name) <= 64 && trimspace(var.fgs_agency_name) == var.fgs_agency_name
    error_message = "fgs_agency_name must be empty or an agency name of at most 64 characters without surrounding spaces."
  }
}

variable "apig_function_network_type" {
  description = "APIG FunctionGraph backend network type: V2 (VPC framework, as the provider's acceptance test uses) or V1."
  type        = string
  default     = "V2"

  validation {
    condition     = contains(["V1", "V2"], var.apig_function_network_type)
    error_message = "apig_function_network_type must be V1 or V2."
  }
}

# ---------------------------------------------------------------- Kafka trigger and consumer retries

variable "kafka_trigger_batch_size" {
  description = "Messages the Kafka trigger hands the consumer per invocation (1-1000)."
  type        = number
  default     = 100

  validation {
    condition     = var.kafka_trigger_batch_size >= 1 && var.kafka_trigger_batch_size <= 1000
    error_message = "kafka_trigger_batch_size must be between 1 and 1000."
  }
}

variable "consumer_async_retries" {
  description = "FunctionGraph async retries of a failed consumer batch (0-3); storing is idempotent."
  type        = number
  default     = 3

  validation {
    condition     = var.consumer_async_retries >= 0 && var.consumer_async_retries <= 3
    error_message = "consumer_async_retries must be between 0 and 3."
  }
}

variable "consumer_max_event_age_seconds" {
  description = "How long a failed consumer batch is retried before it goes to the failure destination (60-86400 s)."
  type        = number
  default     = 3600

  validation {
    condition     = var.consumer_max_event_age_seconds >= 60 && var.consumer_max_event_age_seconds <= 86400
    error_message = "consumer_max_event_age_seconds must be between 60 and 86400."
  }
}

variable "failure_retention_days" {
  description = "Days the consumer's failed batches are kept in the artifacts bucket (0: forever)."
  type        = number
  default     = 30

  validation {
    condition     = var.failure_retention_days >= 0 && var.failure_retention_days <= 365
    error_message = "failure_retention_days must be between 0 and 365."
  }
}

# ---------------------------------------------------------------- the maintenance timer

variable "maintenance_schedule" {
  description = "When the maintenance function runs (a FunctionGraph TIMER trigger): a fixed rate, Nm (1-60 minutes), Nh (1-24 hours) or Nd (1-30 days); or a cron expression with seconds first, six fields, e.g. \"0 0/5 * * * *\", optionally preceded by CRON_TZ=<IANA zone> (default zone: the region's); or @every <N>m / <N>h. Overlapping passes are harmless: each holds a PostgreSQL advisory lock, and one that finds it taken does nothing."
  type        = string
  default     = "5m"

  validation {
    condition = anytrue([
      can(regex("^([1-9]|[1-5][0-9]|60)m$", var.maintenance_schedule)),
      can(regex("^([1-9]|1[0-9]|2[0-4])h$", var.maintenance_schedule)),
      can(regex("^([1-9]|[12][0-9]|30)d$", var.maintenance_schedule)),
      can(regex("^(CRON_TZ=[A-Za-z0-9_+/-]+ )?[0-9A-Za-z*?,/-]+( [0-9A-Za-z*?,/-]+){5}$", var.maintenance_schedule)),
      can(regex("^@every ([1-9][0-9]*m|[1-9][0-9]*h([1-9][0-9]*m)?|[0-9]+\\.[0-9]+h)$", var.maintenance_schedule)),
    ])
    error_message = "maintenance_schedule must be a rate (1-60m, 1-24h, 1-30d), a six-field cron expression with seconds first (every 5 minutes is \"0 0/5 * * * *\"; a five-field Unix expression would be read with seconds first), optionally after CRON_TZ=<zone>, or @every <N>m / <N>h."
  }
}

# ---------------------------------------------------------------- settings the code reads (common/settings.py)

variable "db_name" {
  description = "DB_NAME: the service's PostgreSQL database."
  type        = string
  default     = "iot"

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_]{0,62}$", var.db_name)) && !startswith(var.db_name, "pg")
    error_message = "db_name must be a lower-case PostgreSQL identifier that does not start with pg."
  }
}

variable "db_user" {
  description = "DB_USER: the service's PostgreSQL account (created; owns the database)."
  type        = string
  default     = "iot_app"

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_]{0,62}$", var.db_user)) && !startswith(var.db_user, "pg") && var.db_user != "root"
    error_message = "db_user must be a lower-case identifier, not root and not starting with pg."
  }
}

variable "db_reader_user" {
  description = "DB_READER_USER: the read-only PostgreSQL account (created; the migrations grant it SELECT). Every read and the authorizer connect as it."
  type        = string
  default     = "iot_reader"

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_]{0,62}$", var.db_reader_user)) && !startswith(var.db_reader_user, "pg") && !contains(["root", "rdsadmin"], var.db_reader_user)
    error_message = "db_reader_user must be a lower-case identifier, not root and not starting with pg."
  }
}

variable "db_writer_user" {
  description = "DB_WRITER_USER: the PostgreSQL account the query function writes as (created; the migrations grant it its rights)."
  type        = string
  default     = "iot_writer"

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_]{0,62}$", var.db_writer_user)) && !startswith(var.db_writer_user, "pg") && !contains(["root", "rdsadmin"], var.db_writer_user)
    error_message = "db_writer_user must be a lower-case identifier, not root and not starting with pg."
  }

  validation {
    condition     = length(distinct([var.db_user, var.db_reader_user, var.db_writer_user])) == 3
    error_message = "db_user, db_reader_user and db_writer_user must be three different accounts: each has its own rights."
  }
}

variable "db_read_timeout_ms" {
  description = "DB_READ_TIMEOUT_MS: the reader account's statement timeout; no read holds a connection longer."
  type        = number
  default     = 5000

  validation {
    condition     = var.db_read_timeout_ms >= 100 && var.db_read_timeout_ms <= 60000 && floor(var.db_read_timeout_ms) == var.db_read_timeout_ms
    error_message = "db_read_timeout_ms must be a whole number of milliseconds between 100 and 60000."
  }
}

variable "db_pool_size" {
  description = "DB_POOL_SIZE: PostgreSQL connections per function instance (an instance serves one request at a time; the consumer stores a batch of 4,000 readings or more as two parts at once, on two connections)."
  type        = number
  default     = 2

  validation {
    condition     = var.db_pool_size >= 1 && var.db_pool_size <= 20
    error_message = "db_pool_size must be between 1 and 20."
  }
}

variable "redis_db" {
  description = "REDIS_DB: Redis database number."
  type        = number
  default     = 0

  validation {
    condition     = var.redis_db >= 0 && var.redis_db <= 15
    error_message = "redis_db must be between 0 and 15."
  }
}

variable "redis_key_prefix" {
  description = "REDIS_KEY_PREFIX: prefix of the service's Redis keys."
  type        = string
  default     = "iot:"
}

variable "kafka_topic" {
  description = "KAFKA_TOPIC: the readings topic; the ingest function writes it and the Kafka trigger reads it."
  type        = string
  default     = "device-metrics"

  validation {
    condition     = can(regex("^[A-Za-z0-9._-]{3,200}$", var.kafka_topic))
    error_message = "kafka_topic must be 3-200 characters: letters, digits, dots, underscores and hyphens."
  }
}

variable "kafka_timeout_ms" {
  description = "KAFKA_TIMEOUT_MS: how long ingest waits for the broker before answering 503."
  type        = number
  default     = 5000

  validation {
    condition     = var.kafka_timeout_ms >= 500 && var.kafka_timeout_ms <= 60000
    error_message = "kafka_timeout_ms must be between 500 and 60000."
  }
}

variable "kafka_consumer_group" {
  description = "KAFKA_CONSUMER_GROUP: the consumer group of the consumer's Kafka trigger, whose lag GET /api/pipeline shows. Empty: every group that committed offsets on the readings topic (FunctionGraph does not document the trigger's group name; the DMS console lists it under the instance's consumer groups)."
  type        = string
  default     = ""

  validation {
    condition     = can(regex("^[A-Za-z0-9._-]{0,249}$", var.kafka_consumer_group))
    error_message = "kafka_consumer_group must be empty or a Kafka group name: letters, digits, '.', '_' and '-'."
  }
}

variable "connect_timeout" {
  description = "CONNECT_TIMEOUT: seconds before an unreachable PostgreSQL or Redis counts as down."
  type        = number
  default     = 3

  validation {
    condition     = var.connect_timeout >= 1 && var.connect_timeout <= 30
    error_message = "connect_timeout must be between 1 and 30."
  }
}

variable "demo_mode" {
  description = "DEMO_MODE: enables POST /api/delete-all (admin token still needed). Keep false in production."
  type        = bool
  default     = false
}

variable "auth_enabled" {
  description = "AUTH_ENABLED: every route but /health, /openapi.json and the dashboard's files needs a credential (device or gateway token, read key, admin token), checked by APIG's custom authorizer and again by the function. false: no API uses the authorizer and anyone may send and read."
  type        = bool
  default     = true
}

variable "auth_cache_seconds" {
  description = "AUTH_CACHE_SECONDS: how long a function instance remembers a credential lookup. A revoked credential stops working within apig_authorizer_cache_seconds + this, which may be at most 60."
  type        = number
  default     = 30

  validation {
    condition     = var.auth_cache_seconds >= 0 && var.auth_cache_seconds <= 60 && floor(var.auth_cache_seconds) == var.auth_cache_seconds
    error_message = "auth_cache_seconds must be a whole number of seconds between 0 and 60."
  }
}

variable "apig_authorizer_cache_seconds" {
  description = "How long APIG keeps the custom authorizer's answer for one Authorization header value (cache_age; 0: asks the authorizer every time). Ingest's authorizer keeps nothing (docs/functiongraph.md, section 8). A revoked credential stops working within this + auth_cache_seconds, which may be at most 60."
  type        = number
  default     = 30

  validation {
    condition     = var.apig_authorizer_cache_seconds >= 0 && var.apig_authorizer_cache_seconds <= 60 && floor(var.apig_authorizer_cache_seconds) == var.apig_authorizer_cache_seconds
    error_message = "apig_authorizer_cache_seconds must be a whole number of seconds between 0 and 60."
  }

  # Revocation takes effect everywhere within a minute: APIG may answer from its cache for this long,
  # then a function instance from its own for auth_cache_seconds. (Terraform 1.9+: a validation that
  # reads another variable.)
  validation {
    condition     = var.apig_authorizer_cache_seconds + var.auth_cache_seconds <= 60
    error_message = "apig_authorizer_cache_seconds + auth_cache_seconds must be at most 60: a revoked credential must stop working within a minute."
  }
}

variable "raw_retention_days" {
  description = "RAW_RETENTION_DAYS: days raw readings are kept. Older ones are refused (ingest answers 400, the consumer keeps them as rejected messages) and the maintenance function drops their monthly partitions once wholly expired. Raise it before backfilling older data."
  type        = number
  default     = 90

  validation {
    condition     = var.raw_retention_days >= 1 && floor(var.raw_retention_days) == var.raw_retention_days
    error_message = "raw_retention_days must be a whole number of days, at least 1."
  }
}

variable "rollup_retention_days" {
  description = "ROLLUP_RETENTION_DAYS: days the per-minute and per-15-minute rollups (what GET /api/device/{id}/series reads) are kept; 0 keeps them forever. Less than raw_retention_days leaves charts of older ranges empty while their raw readings still exist."
  type        = number
  default     = 0

  validation {
    condition     = var.rollup_retention_days >= 0 && floor(var.rollup_retention_days) == var.rollup_retention_days
    error_message = "rollup_retention_days must be 0 (keep forever) or a whole number of days."
  }
}

variable "alert_webhook_url" {
  description = "ALERT_WEBHOOK_URL: where the maintenance function POSTs each alert opening and closing (JSON, Idempotency-Key: the event id); empty sends nothing. Plain user data, not a secret: put no token in it. The functions run in the VPC: a receiver on the internet needs enable_nat_gateway = true."
  type        = string
  default     = ""

  validation {
    condition     = var.alert_webhook_url == "" || can(regex("^https?://", var.alert_webhook_url))
    error_message = "alert_webhook_url must be empty or an http(s):// URL."
  }
}

variable "alert_smn_topic" {
  description = "The SMN topic the maintenance function publishes each alert opening and closing to (ALERT_SMN_TOPIC_URN): \"create\" makes one (<name_prefix>-device-alerts), an existing topic's URN (urn:smn:<region>:<project id>:<name>, in this region) uses that one, \"none\" publishes nothing."
  type        = string
  default     = "create"

  validation {
    condition     = contains(["create", "none"], var.alert_smn_topic) || can(regex("^urn:smn:[a-z0-9-]+:[0-9A-Za-z]{1,64}:[A-Za-z0-9][A-Za-z0-9_-]{0,254}$", var.alert_smn_topic))
    error_message = "alert_smn_topic must be \"create\", \"none\" or a topic URN such as urn:smn:ap-southeast-1:<project id>:iot-alerts."
  }
}

variable "alert_subscriptions" {
  description = "Subscriptions to the alert topic: email addresses and HTTPS endpoints, each confirmed once (SMN mails a link, or posts a confirmation request to the endpoint). Ignored when alert_smn_topic is \"none\"."
  type = list(object({
    protocol = string
    endpoint = string
  }))
  default = []

  validation {
    condition = alltrue([
      for s in var.alert_subscriptions :
      (s.protocol == "email" && can(regex("^[^@\\s]+@[^@\\s]+\\.[A-Za-z]{2,}$", s.endpoint))) ||
      (s.protocol == "https" && can(regex("^https://[^\\s]+$", s.endpoint)))
    ]) && length(distinct([for s in var.alert_subscriptions : "${s.protocol}:${s.endpoint}"])) == length(var.alert_subscriptions)
    error_message = "alert_subscriptions must be distinct {protocol = \"email\", endpoint = \"ops@example.com\"} or {protocol = \"https\", endpoint = \"https://...\"} entries."
  }
}

variable "alert_smn_endpoint" {
  description = "ALERT_SMN_ENDPOINT: the SMN API's URL when it is not the region's (https://smn.<region>.myhuaweicloud.com, or what the SDK lists for the region). Empty for almost every deployment."
  type        = string
  default     = ""

  validation {
    condition     = var.alert_smn_endpoint == "" || can(regex("^https://[^\\s/]+/?$", var.alert_smn_endpoint))
    error_message = "alert_smn_endpoint must be empty or an https:// URL without a path."
  }
}

# ---------------------------------------------------------------- NAT gateway (internet access for the functions)

variable "enable_nat_gateway" {
  description = "Create a public NAT gateway with an EIP and an SNAT rule for the functions' subnet, so that functions in the VPC reach the internet (an alert webhook there) from one fixed address (output nat_public_ip). Off: the functions reach the VPC only. The gateway and the EIP are billed while they exist."
  type        = bool
  default     = false
}

variable "nat_gateway_spec" {
  description = "Size of the NAT gateway: \"1\" small (up to 10,000 SNAT connections), \"2\" medium (50,000), \"3\" large (200,000), \"4\" extra-large (1,000,000)."
  type        = string
  default     = "1"

  validation {
    condition     = contains(["1", "2", "3", "4"], var.nat_gateway_spec)
    error_message = "nat_gateway_spec must be \"1\", \"2\", \"3\" or \"4\"."
  }
}

variable "nat_eip_type" {
  description = "Line type of the NAT gateway's EIP: 5_bgp (dynamic BGP) in most regions; some offer 5_sbgp (static BGP) only."
  type        = string
  default     = "5_bgp"

  validation {
    condition     = can(regex("^5_[a-z]+$", var.nat_eip_type))
    error_message = "nat_eip_type must be an EIP type such as 5_bgp or 5_sbgp."
  }
}

variable "nat_bandwidth_mbit" {
  description = "Bandwidth of the NAT gateway's EIP, Mbit/s (1-300), billed by traffic: notifications need little."
  type        = number
  default     = 5

  validation {
    condition     = var.nat_bandwidth_mbit >= 1 && var.nat_bandwidth_mbit <= 300 && floor(var.nat_bandwidth_mbit) == var.nat_bandwidth_mbit
    error_message = "nat_bandwidth_mbit must be a whole number from 1 to 300."
  }
}

variable "log_retention_days" {
  description = "Days the functions' logs are kept in LTS (the service's log group)."
  type        = number
  default     = 30

  validation {
    condition     = var.log_retention_days >= 1 && var.log_retention_days <= 365
    error_message = "log_retention_days must be between 1 and 365 (what LTS allows)."
  }
}

variable "log_level" {
  description = "LOG_LEVEL of the functions."
  type        = string
  default     = "INFO"

  validation {
    condition     = contains(["DEBUG", "INFO", "WARNING", "ERROR"], var.log_level)
    error_message = "log_level must be DEBUG, INFO, WARNING or ERROR."
  }
}

variable "encrypt_secrets" {
  description = "Pass secret settings as encrypted user data (true) or in plain user data (false, if your region's runtime does not expose encrypted variables to getUserData)."
  type        = bool
  default     = true
}

# ---------------------------------------------------------------- secrets (no defaults: set them in the environment, TF_VAR_...)

variable "db_root_password" {
  description = "Password of the RDS root account (used only by Terraform to create the service's account and database)."
  type        = string
  sensitive   = true

  validation {
    condition = length(var.db_root_password) >= 8 && length(var.db_root_password) <= 32 && (
      (length(regexall("[A-Z]", var.db_root_password)) > 0 ? 1 : 0) +
      (length(regexall("[a-z]", var.db_root_password)) > 0 ? 1 : 0) +
      (length(regexall("[0-9]", var.db_root_password)) > 0 ? 1 : 0) +
      (length(regexall("[^A-Za-z0-9]", var.db_root_password)) > 0 ? 1 : 0)
    ) >= 3
    error_message = "db_root_password must be 8-32 characters with at least three of: upper, lower, digit, special."
  }
}

variable "db_password" {
  description = "DB_PASSWORD: password of the service's PostgreSQL account."
  type        = string
  sensitive   = true

  validation {
    condition = length(var.db_password) >= 8 && length(var.db_password) <= 32 && (
      (length(regexall("[A-Z]", var.db_password)) > 0 ? 1 : 0) +
      (length(regexall("[a-z]", var.db_password)) > 0 ? 1 : 0) +
      (length(regexall("[0-9]", var.db_password)) > 0 ? 1 : 0) +
      (length(regexall("[^A-Za-z0-9]", var.db_password)) > 0 ? 1 : 0)
    ) >= 3
    error_message = "db_password must be 8-32 characters with at least three of: upper, lower, digit, special (~!@#%^*-_=+?,)."
  }
}

variable "redis_password" {
  description = "REDIS_PASSWORD: password of the DCS Redis instance."
  type        = string
  sensitive   = true

  validation {
    condition = length(var.redis_password) >= 8 && length(var.redis_password) <= 32 && (
      (length(regexall("[A-Z]", var.redis_password)) > 0 ? 1 : 0) +
      (length(regexall("[a-z]", var.redis_password)) > 0 ? 1 : 0) +
      (length(regexall("[0-9]", var.redis_password)) > 0 ? 1 : 0) +
      (length(regexall("[^A-Za-z0-9]", var.redis_password)) > 0 ? 1 : 0)
    ) >= 3
    error_message = "redis_password must be 8-32 characters with at least three of: upper, lower, digit, special."
  }
}

# ---------------------------------------------------------------- sizes of the managed services

variable "rds_flavor" {
  description = "RDS for PostgreSQL flavor (single instance), e.g. rds.pg.n1.large.2 (2 vCPU, 4 GB)."
  type        = string
  default     = "rds.pg.n1.large.2"

  validation {
    condition     = startswith(var.rds_flavor, "rds.pg.")
    error_message = "rds_flavor must be an RDS for PostgreSQL flavor (rds.pg.*)."
  }
}

variable "rds_postgres_version" {
  description = "PostgreSQL major version, 14 or later: the service buckets time series with date_bin (PostgreSQL 14+) and stores readings in declaratively partitioned tables written with INSERT ... ON CONFLICT. Changing it replaces the RDS instance and its data (the provider's db.version forces a new one): upgrade an existing instance in place with RDS's major version upgrade first, then set this to match."
  type        = string
  default     = "16"

  validation {
    condition     = contains(["14", "15", "16", "17"], var.rds_postgres_version)
    error_message = "rds_postgres_version must be 14 to 17: the service needs date_bin (PostgreSQL 14+) and partitioned tables with ON CONFLICT."
  }
}

variable "rds_volume_type" {
  description = "RDS storage type (CLOUDSSD, ESSD, ULTRAHIGH, ...)."
  type        = string
  default     = "CLOUDSSD"
}

variable "rds_volume_size" {
  description = "RDS storage in GB (40-4000, a multiple of 10)."
  type        = number
  default     = 40

  validation {
    condition     = var.rds_volume_size >= 40 && var.rds_volume_size <= 4000 && var.rds_volume_size % 10 == 0
    error_message = "rds_volume_size must be 40-4000 GB and a multiple of 10."
  }
}

variable "rds_backup_keep_days" {
  description = "Days of automated RDS backups."
  type        = number
  default     = 7

  validation {
    condition     = var.rds_backup_keep_days >= 1 && var.rds_backup_keep_days <= 732
    error_message = "rds_backup_keep_days must be between 1 and 732."
  }
}

variable "redis_engine_version" {
  description = "DCS Redis version (5.0 or 6.0: both use IP whitelists instead of security groups)."
  type        = string
  default     = "6.0"

  validation {
    condition     = contains(["5.0", "6.0"], var.redis_engine_version)
    error_message = "redis_engine_version must be 5.0 or 6.0."
  }
}

variable "redis_cache_mode" {
  description = "DCS mode: single (cheapest; Redis is only a cache here) or ha."
  type        = string
  default     = "single"

  validation {
    condition     = contains(["single", "ha"], var.redis_cache_mode)
    error_message = "redis_cache_mode must be single or ha."
  }
}

variable "redis_capacity_gb" {
  description = "DCS memory in GB (latest value per device and metric: 1 GB holds millions)."
  type        = number
  default     = 1

  validation {
    condition     = contains([0.125, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64], var.redis_capacity_gb)
    error_message = "redis_capacity_gb must be one of 0.125, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64."
  }
}

variable "kafka_flavor_id" {
  description = "DMS for Kafka flavor (cluster), e.g. c6.2u4g.cluster."
  type        = string
  default     = "c6.2u4g.cluster"
}

variable "kafka_engine_version" {
  description = "Kafka engine version of the DMS instance."
  type        = string
  default     = "3.x"
}

variable "kafka_storage_spec_code" {
  description = "DMS for Kafka disk type: dms.physical.storage.high.v2 or dms.physical.storage.ultra.v2."
  type        = string
  default     = "dms.physical.storage.high.v2"

  validation {
    condition     = contains(["dms.physical.storage.high.v2", "dms.physical.storage.ultra.v2"], var.kafka_storage_spec_code)
    error_message = "kafka_storage_spec_code must be dms.physical.storage.high.v2 or dms.physical.storage.ultra.v2."
  }
}

variable "kafka_storage_gb" {
  description = "DMS for Kafka message storage in GB (300 minimum for c6 flavors)."
  type        = number
  default     = 300

  validation {
    condition     = var.kafka_storage_gb >= 300
    error_message = "kafka_storage_gb must be at least 300."
  }
}

variable "kafka_broker_num" {
  description = "DMS for Kafka brokers (3 minimum)."
  type        = number
  default     = 3

  validation {
    condition     = var.kafka_broker_num >= 3
    error_message = "kafka_broker_num must be at least 3."
  }
}

variable "kafka_partitions" {
  description = "Partitions of the readings topic: the most consumer instances the Kafka trigger runs in parallel."
  type        = number
  default     = 6

  validation {
    condition     = var.kafka_partitions >= 1 && var.kafka_partitions <= 200
    error_message = "kafka_partitions must be between 1 and 200."
  }
}

variable "kafka_retention_hours" {
  description = "Hours the readings topic keeps messages."
  type        = number
  default     = 72

  validation {
    condition     = var.kafka_retention_hours >= 1 && var.kafka_retention_hours <= 720
    error_message = "kafka_retention_hours must be between 1 and 720."
  }
}

variable "apig_edition" {
  description = "APIG dedicated instance edition (BASIC is enough for this service)."
  type        = string
  default     = "BASIC"

  validation {
    condition     = contains(["BASIC", "PROFESSIONAL", "ENTERPRISE", "PLATINUM"], var.apig_edition)
    error_message = "apig_edition must be BASIC, PROFESSIONAL, ENTERPRISE or PLATINUM."
  }
}

variable "apig_ingress_bandwidth_mbit" {
  description = "Public inbound bandwidth of the API gateway in Mbit/s (billed by bandwidth)."
  type        = number
  default     = 5

  validation {
    condition     = var.apig_ingress_bandwidth_mbit >= 5 && var.apig_ingress_bandwidth_mbit <= 2000
    error_message = "apig_ingress_bandwidth_mbit must be between 5 and 2000 (the provider's minimum is 5)."
  }
}

# ---------------------------------------------------------------- IAM

variable "fgs_agency_dms_readonly_fallback" {
  description = "Also grant the created agency the system role DMS ReadOnlyAccess in the region: the fallback if the Kafka trigger will not enable with the fine-grained dms:instance:get alone (see iam.tf)."
  type        = bool
  default     = false
  nullable    = false
}

# ---------------------------------------------------------------- gateway: domain, certificate, throttling

variable "api_domain" {
  description = "The API's own domain (e.g. api.example.com), bound to the API group with api_certificate_id. Empty: the group's debugging domain, which APIG caps at 1,000 calls a day (a smoke test only)."
  type        = string
  default     = ""

  validation {
    condition     = var.api_domain == "" || (length(var.api_domain) <= 255 && can(regex("^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.){1,7}[A-Za-z]{2,64}$", var.api_domain)))
    error_message = "api_domain must be empty or a domain name such as api.example.com (no scheme, path, port or wildcard)."
  }
}

variable "api_certificate_id" {
  description = "ID of the SSL certificate for api_domain, already uploaded to APIG (keeps its private key out of Terraform). Required when api_domain is set."
  type        = string
  default     = ""

  validation {
    condition     = var.api_certificate_id == "" || can(regex("^[A-Za-z0-9-]{8,64}$", var.api_certificate_id))
    error_message = "api_certificate_id must be empty or an APIG certificate ID (letters, digits and hyphens)."
  }
}

variable "api_min_tls_version" {
  description = "Lowest TLS version the gateway accepts on api_domain: TLSv1.2, or TLSv1.1 for old devices."
  type        = string
  default     = "TLSv1.2"

  validation {
    condition     = contains(["TLSv1.1", "TLSv1.2"], var.api_min_tls_version)
    error_message = "api_min_tls_version must be TLSv1.1 or TLSv1.2."
  }
}

variable "apig_ingress_bandwidth_charging_mode" {
  description = "How the gateway's public inbound bandwidth is billed; APIG offers only bandwidth (per Mbit/s) so far."
  type        = string
  default     = "bandwidth"

  validation {
    condition     = contains(["bandwidth"], var.apig_ingress_bandwidth_charging_mode)
    error_message = "apig_ingress_bandwidth_charging_mode must be bandwidth (the only mode APIG documents)."
  }
}

variable "api_throttling" {
  description = "Requests per minute each API admits, in total and from one source IP, per throttling policy: ingest (device posts), read (query API, dashboard, health) and admin (delete-all, alert-rule changes, acknowledgements)."
  type = map(object({
    api_requests_per_minute = number
    ip_requests_per_minute  = number
  }))
  default = {
    ingest = { api_requests_per_minute = 12000, ip_requests_per_minute = 3000 }
    read   = { api_requests_per_minute = 6000, ip_requests_per_minute = 600 }
    admin  = { api_requests_per_minute = 5, ip_requests_per_minute = 2 }
  }

  validation {
    condition     = sort(keys(var.api_throttling)) == sort(["admin", "ingest", "read"])
    error_message = "api_throttling must have exactly the keys ingest, read and admin."
  }

  validation {
    condition = alltrue([for p in values(var.api_throttling) :
      p.ip_requests_per_minute >= 1 && p.ip_requests_per_minute <= p.api_requests_per_minute &&
      p.api_requests_per_minute <= 2147483647 && floor(p.api_requests_per_minute) == p.api_requests_per_minute &&
      floor(p.ip_requests_per_minute) == p.ip_requests_per_minute
    ])
    error_message = "Each limit must be a whole number of at least 1, and ip_requests_per_minute at most api_requests_per_minute."
  }

  validation {
    condition = try(alltrue([for name, p in var.api_throttling :
      name == "admin" || (
        var.api_throttling["admin"].api_requests_per_minute < p.api_requests_per_minute &&
        var.api_throttling["admin"].ip_requests_per_minute < p.ip_requests_per_minute
      )
    ]), true) # a missing key is reported by the first rule
    error_message = "admin (delete-all) must stay the tightest policy: both of its limits below those of ingest and read."
  }
}

# ---------------------------------------------------------------- alarms

variable "alarm_emails" {
  description = "Addresses subscribed by email to the alarm topic (each confirms once by the link SMN mails). Empty: alarms and later alerts go to the topic only."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for e in var.alarm_emails : can(regex("^[^@\\s]+@[^@\\s]+\\.[A-Za-z]{2,}$", e))]) && length(distinct(var.alarm_emails)) == length(var.alarm_emails)
    error_message = "alarm_emails must be distinct email addresses such as ops@example.com."
  }
}

variable "alarm_rules" {
  description = "When each Cloud Eye alarm of alarms.tf fires: its metric, rolled up over period seconds, is >= threshold for count periods in a row. The rds_* thresholds are percentages (rds_disk_percent 80 = less than 20 % free)."
  type = map(object({
    threshold = number
    period    = number
    count     = number
  }))
  default = {
    consumer_failures    = { threshold = 1, period = 300, count = 1 }
    maintenance_failures = { threshold = 3, period = 3600, count = 1 }
    http_function_errors = { threshold = 5, period = 300, count = 1 }
    function_throttles   = { threshold = 1, period = 300, count = 1 }
    kafka_backlog        = { threshold = 10000, period = 300, count = 3 }
    rds_cpu_percent      = { threshold = 80, period = 300, count = 3 }
    rds_disk_percent     = { threshold = 80, period = 300, count = 1 }
    apig_5xx             = { threshold = 10, period = 300, count = 1 }
    apig_throttled       = { threshold = 100, period = 300, count = 1 }
  }

  validation {
    condition = sort(keys(var.alarm_rules)) == sort([
      "apig_5xx", "apig_throttled", "consumer_failures", "function_throttles", "http_function_errors",
      "kafka_backlog", "maintenance_failures", "rds_cpu_percent", "rds_disk_percent",
    ])
    error_message = "alarm_rules must have exactly the keys of alarms.tf's alarms (see the default)."
  }

  validation {
    condition = alltrue([for r in values(var.alarm_rules) :
      r.threshold >= 0 && contains([1, 300, 1200, 3600, 14400, 86400], r.period) && contains([1, 2, 3, 4, 5], r.count)
    ])
    error_message = "Each alarm rule needs threshold >= 0, period one of 1 (raw data), 300, 1200, 3600, 14400, 86400 seconds, and count 1-5."
  }

  validation {
    condition     = try(var.alarm_rules["rds_cpu_percent"].threshold <= 100 && var.alarm_rules["rds_disk_percent"].threshold <= 100, true)
    error_message = "rds_cpu_percent and rds_disk_percent are percentages: threshold at most 100."
  }
}

# ---------------------------------------------------------------- Kafka security

variable "kafka_sasl_ssl" {
  description = "SASL_SSL between DMS Kafka and its clients (the functions and the Kafka trigger, port 9093) instead of plaintext inside the VPC (9092). Choose it when the stack is created: changing it on an existing stack replaces the Kafka instance and loses every reading still queued in it. Needs kafka_sasl_password, and the DMS CA certificate at deploy/kafka-ca.pem before `make package`."
  type        = bool
  default     = false
}

variable "kafka_sasl_username" {
  description = "KAFKA_SASL_USERNAME: the SASL user DMS creates with the instance when kafka_sasl_ssl is on (fixed once the instance exists)."
  type        = string
  default     = "iot-app"

  validation {
    condition     = can(regex("^[A-Za-z][A-Za-z0-9-]{3,63}$", var.kafka_sasl_username))
    error_message = "kafka_sasl_username must be 4-64 letters, digits or hyphens, starting with a letter."
  }
}

variable "kafka_sasl_mechanism" {
  description = "KAFKA_SASL_MECHANISM the functions sign in with when kafka_sasl_ssl is on: SCRAM-SHA-512 (the password itself never crosses the wire) or PLAIN. The instance enables both."
  type        = string
  default     = "SCRAM-SHA-512"

  validation {
    condition     = contains(["PLAIN", "SCRAM-SHA-512"], var.kafka_sasl_mechanism)
    error_message = "kafka_sasl_mechanism must be PLAIN or SCRAM-SHA-512, the mechanisms DMS offers."
  }
}

variable "kafka_sasl_password" {
  description = "KAFKA_SASL_PASSWORD: password of the SASL user when kafka_sasl_ssl is on; an empty string when it is off."
  type        = string
  sensitive   = true

  validation {
    condition = var.kafka_sasl_password == "" || (length(var.kafka_sasl_password) >= 8 && length(var.kafka_sasl_password) <= 32 && (
      (length(regexall("[A-Z]", var.kafka_sasl_password)) > 0 ? 1 : 0) +
      (length(regexall("[a-z]", var.kafka_sasl_password)) > 0 ? 1 : 0) +
      (length(regexall("[0-9]", var.kafka_sasl_password)) > 0 ? 1 : 0) +
      (length(regexall("[^A-Za-z0-9]", var.kafka_sasl_password)) > 0 ? 1 : 0)
    ) >= 2)
    error_message = "kafka_sasl_password must be empty (kafka_sasl_ssl off) or 8-32 characters with at least two of: upper, lower, digit, special."
  }
}
