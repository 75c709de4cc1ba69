#!/usr/bin/env bash
# Create or update (idempotently) the Microsoft Entra app registration that protects the API:
# the app roles Admin and Contributor (exporter/api/access.py), the Application ID URI
# api://<appId>, v2 access tokens, ID tokens for App Service Authentication's sign-in, the redirect
# URI https://<function app host>/.auth/login/aad/callback, and the service principal with
# "assignment required". Run it again at any time: it keeps what exists (role ids, other roles,
# other redirect URIs) and adds what is missing. See docs/deploy.md, step 1.
#
#   scripts/register-entra-app.sh [--name NAME] [--app-id APP_ID] [--host HOST] [--azd]
#                                 [--dry-run [--current FILE]]
#
#   --name NAME     display name, used to find the registration when no app id is given
#                   (default: $AUTH_APP_DISPLAY_NAME, else "Omnisend segment exporter API")
#   --app-id ID     application (client) id of an existing registration (default: $AUTH_CLIENT_ID)
#   --host HOST     the function app's host name or URL, for the redirect URI
#                   (default: $AZURE_FUNCTION_APP_URL, an output of the deployment); without it the
#                   redirect URI is left for a later run, after the first deployment
#   --azd           run as an azd hook: store AUTH_CLIENT_ID in the azd environment; skip
#                   everything when AUTH_APP_REGISTRATION=skip
#   --dry-run       print the JSON and the az commands, run nothing (needs no az login)
#   --current FILE  with --dry-run: take FILE as the registration's current manifest (the output
#                   of `az ad app show --id <appId>`), to preview what a run would change
#
# Needs: az (logged in, allowed to register applications), python3.
set -euo pipefail

ROLE_ADMIN="Admin"              # exporter/api/access.py ROLE_ADMIN
ROLE_CONTRIBUTOR="Contributor"  # exporter/api/access.py ROLE_CONTRIBUTOR
CALLBACK_PATH="/.auth/login/aad/callback"
GRAPH="https://graph.microsoft.com/v1.0"

name="${AUTH_APP_DISPLAY_NAME:-Omnisend segment exporter API}"
app_id="${AUTH_CLIENT_ID:-}"
host="${AZURE_FUNCTION_APP_URL:-}"
azd_mode=false
dry_run=false
current_file=""

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --name) name="${2:?--name needs a value}"; shift 2 ;;
    --app-id) app_id="${2:?--app-id needs a value}"; shift 2 ;;
    --host) host="${2:?--host needs a value}"; shift 2 ;;
    --azd) azd_mode=true; shift ;;
    --dry-run) dry_run=true; shift ;;
    --current) current_file="${2:?--current needs a file}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "register-entra-app: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done

if [ -n "$current_file" ] && ! $dry_run; then
  echo "register-entra-app: --current goes with --dry-run" >&2
  exit 2
fi

if $azd_mode && [ "${AUTH_APP_REGISTRATION:-}" = "skip" ]; then
  echo "register-entra-app: AUTH_APP_REGISTRATION=skip: leaving the app registration alone (AUTH_CLIENT_ID=${AUTH_CLIENT_ID:-<unset>})"
  exit 0
fi

# The host name alone: accept https://func-x.azurewebsites.net/ as well as func-x.azurewebsites.net.
host="${host#https://}"
host="${host#http://}"
host="${host%%/*}"
redirect_uri=""
if [ -n "$host" ]; then
  redirect_uri="https://${host}${CALLBACK_PATH}"
fi

# Print a command (dry run) or run it.
run() {
  if $dry_run; then
    printf '+'
    printf ' %q' "$@"
    printf '\n'
  else
    "$@"
  fi
}

# The PATCH body for the registration: the current manifest ($1, JSON; {} for a new one) merged
# with what the API needs. Existing role ids are kept (Graph refuses to change the id of an enabled
# role), roles and URIs that are not ours are left as they are.
manifest() {
  CURRENT="$1" APP_ID="$2" REDIRECT_URI="$3" ROLE_ADMIN="$ROLE_ADMIN" ROLE_CONTRIBUTOR="$ROLE_CONTRIBUTOR" \
    python3 - <<'PY'
import json
import os
import uuid

current = json.loads(os.environ["CURRENT"] or "{}")
wanted = {
    os.environ["ROLE_ADMIN"]: "Manage connections (Omnisend API keys) and everything Contributors can do.",
    os.environ["ROLE_CONTRIBUTOR"]: "Manage exports and start runs on the connections open to contributors.",
}
roles = [dict(r) for r in current.get("appRoles") or []]
for value, description in wanted.items():
    role = next((r for r in roles if r.get("value") == value), None)
    if role is None:
        role = {"id": str(uuid.uuid4()), "value": value}
        roles.append(role)
    role.update(allowedMemberTypes=["User", "Application"], displayName=value, description=description,
                isEnabled=True)
uris = list(current.get("identifierUris") or [])
if "api://" + os.environ["APP_ID"] not in uris:
    uris.append("api://" + os.environ["APP_ID"])
body = {"appRoles": roles, "identifierUris": uris, "api": {"requestedAccessTokenVersion": 2}}
web = current.get("web") or {}
redirects = list(web.get("redirectUris") or [])
if os.environ["REDIRECT_URI"] and os.environ["REDIRECT_URI"] not in redirects:
    redirects.append(os.environ["REDIRECT_URI"])
# App Service Authentication signs users in without a client secret: it needs ID tokens. The rest
# of `web` is sent back as it is (redirectUriSettings is derived from redirectUris by Graph).
grants = dict(web.get("implicitGrantSettings") or {}, enableIdTokenIssuance=True)
body["web"] = {**{k: v for k, v in web.items() if k in ("homePageUrl", "logoutUrl")},
               "redirectUris": redirects, "implicitGrantSettings": grants}
print(json.dumps(body, indent=2))
PY
}

if $dry_run; then
  echo "# register-entra-app --dry-run: nothing is run; az would be called as follows."
  if [ -z "$app_id" ]; then
    echo "# find the registration by name; create it when there is none:"
    run az ad app list --display-name "$name" --query "[].appId" -o tsv
    run az ad app create --display-name "$name" --sign-in-audience AzureADMyOrg --query appId -o tsv
    app_id="<appId>"
  fi
  current="{}"
  if [ -n "$current_file" ]; then
    current=$(cat "$current_file")
  fi
  object_id="<object id of $app_id>"
else
  command -v az >/dev/null || { echo "register-entra-app: the Azure CLI (az) is needed" >&2; exit 1; }
  command -v python3 >/dev/null || { echo "register-entra-app: python3 is needed" >&2; exit 1; }
  az account show --query tenantId -o tsv >/dev/null || {
    echo "register-entra-app: not logged in: az login (or set AUTH_APP_REGISTRATION=skip and AUTH_CLIENT_ID)" >&2
    exit 1
  }
  if [ -z "$app_id" ]; then
    found=$(az ad app list --display-name "$name" --query "[].appId" -o tsv)
    count=$(printf '%s' "$found" | grep -c . || true)
    if [ "$count" -gt 1 ]; then
      echo "register-entra-app: $count app registrations are named \"$name\"; pass --app-id" >&2
      exit 1
    elif [ "$count" -eq 1 ]; then
      app_id="$found"
      echo "register-entra-app: using the app registration \"$name\" ($app_id)"
    else
      app_id=$(az ad app create --display-name "$name" --sign-in-audience AzureADMyOrg --query appId -o tsv)
      echo "register-entra-app: created the app registration \"$name\" ($app_id)"
    fi
  fi
  current=$(az ad app show --id "$app_id" --query "{appRoles: appRoles, identifierUris: identifierUris, web: web}" -o json)
  object_id=$(az ad app show --id "$app_id" --query id -o tsv)
fi

body=$(manifest "$current" "$app_id" "$redirect_uri")
body_file=$(mktemp "${TMPDIR:-/tmp}/entra-app.XXXXXX.json")
trap 'rm -f "$body_file"' EXIT
printf '%s\n' "$body" >"$body_file"

if $dry_run; then
  echo "# the registration's roles, Application ID URI, token version and sign-in (PATCH body):"
  printf '%s\n' "$body"
fi
run az rest --method PATCH --uri "$GRAPH/applications/$object_id" \
  --headers "Content-Type=application/json" --body "@$body_file"

# The service principal (enterprise application); only assigned users and apps get tokens.
if $dry_run; then
  run az ad sp show --id "$app_id" --query id -o tsv
  run az ad sp create --id "$app_id" --query id -o tsv
  sp_id="<service principal id>"
else
  sp_id=$(az ad sp show --id "$app_id" --query id -o tsv 2>/dev/null || true)
  if [ -z "$sp_id" ]; then
    sp_id=$(az ad sp create --id "$app_id" --query id -o tsv)
  fi
fi
run az ad sp update --id "$sp_id" --set appRoleAssignmentRequired=true

if $azd_mode; then
  run azd env set AUTH_CLIENT_ID "$app_id"
fi

if [ -z "$redirect_uri" ]; then
  echo "register-entra-app: no function app host yet: run again after the deployment (azd does, as its postprovision hook), or with --host <name>.azurewebsites.net, to add the sign-in redirect URI"
fi
echo "authClientId = $app_id"
