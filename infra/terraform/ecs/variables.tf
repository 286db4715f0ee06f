# ---------------------------------------------------------------- where

variable "region" {
  description = "Huawei Cloud region to deploy to, e.g. ap-southeast-1."
  type        = string

  validation {
    condition     = can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]+$", var.region))
    error_message = "region must look like ap-southeast-1 or cn-north-4."
  }
}

variable "availability_zone" {
  description = "Availability zone of the server and its data disk (they must share one). Empty: the region's first AZ."
  type        = string
  default     = ""

  validation {
    condition     = var.availability_zone == "" || can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]+[a-z]$", var.availability_zone))
    error_message = "availability_zone must be empty or an AZ name such as ap-southeast-1a."
  }
}

variable "name_prefix" {
  description = "Prefix of every resource name: <prefix>-vpc, <prefix>-server, <prefix>-data, ..."
  type        = string
  default     = "iot-ecs"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,14}$", var.name_prefix))
    error_message = "name_prefix must be 2-15 characters: lower-case letters, digits and hyphens, starting with a letter."
  }
}

variable "tags" {
  description = "Tags added to every resource that takes tags."
  type        = map(string)
  default     = {}
}

# ---------------------------------------------------------------- what runs

variable "repository_url" {
  description = "HTTPS URL of the public git repository the server clones and runs (this project, or your fork of it)."
  type        = string

  validation {
    # Written into the boot script between single quotes: no quotes, backslashes, $ or whitespace.
    condition     = can(regex("^https://[^\\s'\"\\\\$`]+$", var.repository_url))
    error_message = "repository_url must be an https:// URL without quotes, backslashes, $ or spaces."
  }
}

variable "git_ref" {
  description = "What the server checks out: a release tag (v1.2.0), a commit id or a branch. A tag or a commit pins what runs; a new value replaces the server (the data disk stays)."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9._/-]{0,99}$", var.git_ref)) && !strcontains(var.git_ref, "..")
    error_message = "git_ref must be a tag, branch or commit id: letters, digits, '.', '_', '/' and '-', at most 100 characters."
  }
}

variable "domain" {
  description = "DNS name the service answers on over HTTPS (Caddy obtains and renews its certificate). Empty: plain HTTP on the EIP, port 80. Point the name's A record at the `eip` output."
  type        = string
  default     = ""

  validation {
    condition     = var.domain == "" || can(regex("^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z][a-z0-9-]{0,61}[a-z0-9]$", var.domain))
    error_message = "domain must be empty or a lower-case DNS name such as iot.example.com."
  }
}

variable "app_settings" {
  description = "Extra settings for the service's .env (README's Configuration table), e.g. { LOG_LEVEL = \"DEBUG\", SHIM_WORKERS = \"4\" }. The rest keep docker-compose.yml's defaults; auth stays on unless AUTH_ENABLED says otherwise. The module sets the secrets and CORS_ORIGINS (the site's own URL) itself."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for name in keys(var.app_settings) : can(regex("^[A-Z][A-Z0-9_]*$", name)) && !contains(["DB_PASSWORD", "DB_READER_PASSWORD", "DB_WRITER_PASSWORD", "AUTH_CONTEXT_SECRET", "CORS_ORIGINS", "HTTP_PORT"], name) && !startswith(name, "COMPOSE_")])
    error_message = "app_settings names must be UPPER_CASE, and not DB_PASSWORD, DB_READER_PASSWORD, DB_WRITER_PASSWORD, AUTH_CONTEXT_SECRET, CORS_ORIGINS, HTTP_PORT or COMPOSE_*: the module sets those."
  }

  validation {
    # Written into .env as they are: no quotes, $, backslashes or newlines.
    condition     = alltrue([for value in values(var.app_settings) : can(regex("^[A-Za-z0-9 _.,:/@+=-]*$", value))])
    error_message = "app_settings values may hold letters, digits, spaces and _.,:/@+=- only."
  }
}

# ---------------------------------------------------------------- network and access

variable "vpc_cidr" {
  description = "CIDR of the VPC; the server's subnet is the second /24 inside it."
  type        = string
  default     = "10.30.0.0/16"

  validation {
    condition     = can(cidrsubnet(var.vpc_cidr, 8, 1)) && tonumber(split("/", var.vpc_cidr)[1]) <= 23
    error_message = "vpc_cidr must be an IPv4 CIDR of /23 or larger."
  }
}

variable "admin_ssh_cidrs" {
  description = "Who may reach SSH (22), e.g. [\"203.0.113.7/32\"]. Empty (the default): SSH is closed; only 80 and 443 are open."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.admin_ssh_cidrs : can(cidrhost(c, 0)) && !endswith(c, "/0")])
    error_message = "admin_ssh_cidrs must be IPv4 CIDRs narrower than the whole internet (no /0)."
  }
}

variable "ssh_public_key" {
  description = "OpenSSH public key for root's login (a key pair is created from it). Empty: no key. Changing it replaces the server (the data disk stays), so set it before the first apply even while SSH is closed."
  type        = string
  default     = ""

  validation {
    condition     = var.ssh_public_key == "" || can(regex("^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/=]+( [^\\n]*)?$", trimspace(var.ssh_public_key)))
    error_message = "ssh_public_key must be empty or one OpenSSH public key line (ssh-ed25519, ssh-rsa or ecdsa-sha2-*)."
  }
}

variable "eip_type" {
  description = "EIP line type: 5_bgp (dynamic BGP) in most regions; some offer 5_sbgp (static BGP) only."
  type        = string
  default     = "5_bgp"

  validation {
    condition     = can(regex("^5_[a-z]+$", var.eip_type))
    error_message = "eip_type must be an EIP type such as 5_bgp or 5_sbgp."
  }
}

variable "bandwidth_mbit" {
  description = "Dedicated bandwidth of the EIP, Mbit/s (1-300)."
  type        = number
  default     = 10

  validation {
    condition     = var.bandwidth_mbit >= 1 && var.bandwidth_mbit <= 300 && floor(var.bandwidth_mbit) == var.bandwidth_mbit
    error_message = "bandwidth_mbit must be a whole number from 1 to 300."
  }
}

variable "bandwidth_charge_mode" {
  description = "How the EIP's bandwidth is billed: traffic (per GB sent, cheap while idle) or bandwidth (per Mbit/s per hour)."
  type        = string
  default     = "traffic"

  validation {
    condition     = contains(["traffic", "bandwidth"], var.bandwidth_charge_mode)
    error_message = "bandwidth_charge_mode must be traffic or bandwidth."
  }
}

# ---------------------------------------------------------------- the server and its disks

variable "flavor_id" {
  description = "ECS flavor, e.g. s6.large.4. Empty: the first general-purpose flavor in the AZ with flavor_vcpus and flavor_memory_gb."
  type        = string
  default     = ""

  validation {
    condition     = var.flavor_id == "" || can(regex("^[a-z0-9]+\\.[a-z0-9]+\\.[0-9]+$", var.flavor_id))
    error_message = "flavor_id must be empty or a flavor name such as s6.large.4."
  }
}

variable "flavor_vcpus" {
  description = "vCPUs of the looked-up flavor (when flavor_id is empty)."
  type        = number
  default     = 2

  validation {
    condition     = contains([1, 2, 4, 8, 16, 32], var.flavor_vcpus)
    error_message = "flavor_vcpus must be 1, 2, 4, 8, 16 or 32."
  }
}

variable "flavor_memory_gb" {
  description = "Memory (GB) of the looked-up flavor (when flavor_id is empty). PostgreSQL, Kafka's JVM, Redis, the shim's workers and two trigger loops share it: 8 is comfortable, 4 the least."
  type        = number
  default     = 8

  validation {
    condition     = var.flavor_memory_gb >= 4 && var.flavor_memory_gb <= 256 && floor(var.flavor_memory_gb) == var.flavor_memory_gb
    error_message = "flavor_memory_gb must be a whole number from 4 to 256."
  }
}

variable "image_name" {
  description = "Public image the server runs (the newest one of this name); the boot script expects Ubuntu with cloud-init and apt."
  type        = string
  default     = "Ubuntu 24.04 server 64bit"

  validation {
    condition     = can(regex("^Ubuntu [0-9]{2}\\.04 server 64bit", var.image_name))
    error_message = "image_name must name a public Ubuntu LTS image, e.g. \"Ubuntu 24.04 server 64bit\" or \"Ubuntu 22.04 server 64bit\"."
  }
}

variable "system_disk_gb" {
  description = "System disk (GB): the OS and the repository checkout; the data and Docker's images live on the data disk."
  type        = number
  default     = 40

  validation {
    condition     = var.system_disk_gb >= 40 && var.system_disk_gb <= 1024 && floor(var.system_disk_gb) == var.system_disk_gb
    error_message = "system_disk_gb must be a whole number from 40 to 1024."
  }
}

variable "data_disk_gb" {
  description = "Data disk (GB): PostgreSQL, Kafka and Redis volumes, Caddy's certificates and Docker's images. It can grow later (apply, then it is grown on the next first boot or with resize2fs); it cannot shrink."
  type        = number
  default     = 100

  validation {
    condition     = var.data_disk_gb >= 20 && var.data_disk_gb <= 32768 && floor(var.data_disk_gb) == var.data_disk_gb
    error_message = "data_disk_gb must be a whole number from 20 to 32768."
  }
}

variable "data_disk_type" {
  description = "EVS type of the data disk: GPSSD (general purpose SSD), SSD (ultra-high I/O), ESSD (extreme SSD) or SAS (high I/O)."
  type        = string
  default     = "GPSSD"

  validation {
    condition     = contains(["GPSSD", "SSD", "ESSD", "SAS"], var.data_disk_type)
    error_message = "data_disk_type must be GPSSD, SSD, ESSD or SAS (GPSSD2 and ESSD2 need IOPS settings this module does not set)."
  }
}
